"""Configuration shared by the RL algorithms: frozen dataclasses, validated on construction.

A config holds two kinds of settings:

* **static** ones that define shapes or the program's structure (environment, number of
  environments and steps, minibatches, layer sizes, switches). Changing them means compiling a
  new program.
* **sweepable** ones (listed in ``SWEEPABLE``: learning rate, discount, clip range,
  coefficients). ``config.hyperparams()`` returns them as a dict of float32 arrays, the pytree
  that ``train(key, hyperparams)`` takes, so ``jax.vmap`` can batch over them without
  recompiling.

Every field is checked in ``__post_init__``: a bad value raises ``ValueError`` naming the field
and its valid range before anything is traced or compiled.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Mapping

import jax.numpy as jnp

from purejaxpo.envs.registry import make, validate_env_name
from purejaxpo.networks import SPEC_FIELDS, PolicyFields, PolicyParts, PolicySpec
from purejaxpo.update import OPTIMIZERS


def _fail(field: str, value: Any, valid: str) -> None:
    raise ValueError(f"{field}={value!r} is invalid: {valid}")


def check_int(field: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(field, value, f"must be an integer >= {low}")


def check_float(field: str, value: Any, low: float, high: float = math.inf, *,
                low_open: bool = False, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(field, value, "must be a finite number")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        lb = "(" if low_open else "["
        hb = ")" if high_open or high == math.inf else "]"
        _fail(field, value, f"must be in {lb}{low}, {high}{hb}")


def check_optimizer(kind: Any, eps: Any) -> None:
    """Checks the ``optimizer`` (one of ``update.OPTIMIZERS``) and ``optimizer_eps`` fields."""
    if kind not in OPTIMIZERS:
        _fail("optimizer", kind, f"must be one of {list(OPTIMIZERS)}")
    check_float("optimizer_eps", eps, 0.0, low_open=True)


def check_bool(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(field, value, "must be true or false")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLConfig(PolicyFields):
    """Settings every on-policy RL algorithm here shares.

    Attributes:
      env: gymnax environment name (``purejaxpo.envs.env_names()`` lists them).
      total_timesteps: env steps per run (per seed), over all environments.
      num_envs: environments stepped in parallel (static).
      num_steps: steps per environment in one rollout (static); one update per rollout.
      learning_rate: optimiser step size (sweepable).
      anneal_lr: decay the learning rate linearly to 0 over the run.
      gamma: discount factor (sweepable).
      max_grad_norm: global gradient-norm clip (sweepable).
      torso, hidden_sizes, conv_*, gru_size, shared_torso, head_sizes, activation, log_std:
        the policy's network (static), inherited from
        :class:`~purejaxpo.networks.PolicyFields`, which documents them.
      normalize_obs: running observation normalisation (statistics are part of the state).
      normalize_reward: scale rewards by the running std of the discounted return.
    """

    env: str = "CartPole-v1"
    total_timesteps: int = 500_000
    num_envs: int = 4
    num_steps: int = 128
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    max_grad_norm: float = 0.5
    normalize_obs: bool = False
    normalize_reward: bool = False

    SWEEPABLE: ClassVar[tuple[str, ...]] = ("learning_rate", "gamma", "max_grad_norm")

    def __post_init__(self):
        # Accept lists for tuple fields (JSON, CLI), but store tuples so the config stays hashable.
        for f in dataclasses.fields(self):
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first invalid field."""
        if not isinstance(self.env, str):
            _fail("env", self.env, "must be an environment name")
        validate_env_name(self.env)
        check_int("num_envs", self.num_envs)
        check_int("num_steps", self.num_steps)
        check_int("total_timesteps", self.total_timesteps)
        if self.total_timesteps < self.batch_size:
            _fail("total_timesteps", self.total_timesteps,
                  f"must be >= num_envs * num_steps = {self.batch_size} (one update)")
        check_float("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_bool("anneal_lr", self.anneal_lr)
        check_float("gamma", self.gamma, 0.0, 1.0)
        check_float("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        spec = self.policy_spec()  # the policy fields (torso, hidden_sizes, gru_size, ...)
        if spec.torso == "cnn":  # a CNN needs image observations: ask the env (no compiling)
            env, env_params = make(self.env)
            spec.check_observation(tuple(env.observation_space(env_params).shape))
        check_bool("normalize_obs", self.normalize_obs)
        check_bool("normalize_reward", self.normalize_reward)

    def policy_parts(self) -> PolicyParts:
        """The parts of a policy this algorithm trains: actor and critic by default, their
        torso shared or not, no memory. Algorithms override this one method to declare theirs.
        """
        return PolicyParts()

    def policy_spec(self) -> PolicySpec:
        """The policy network this config describes (``ValueError`` names a bad field)."""
        return PolicySpec(**{f: getattr(self, f) for f in SPEC_FIELDS},
                          parts=self.policy_parts())

    @property
    def batch_size(self) -> int:
        """Env steps per update: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        """Updates per run: ``total_timesteps // batch_size``."""
        return self.total_timesteps // self.batch_size

    # Optional sweepable settings whose None means "same as another field" (e.g. DAPO's upper
    # clip range defaults to the lower one).
    SWEEPABLE_FALLBACKS: ClassVar[dict[str, str]] = {"clip_eps_high": "clip_eps"}

    def hyperparams(self) -> dict[str, Any]:
        """The sweepable settings as float32 arrays: the ``hyperparams`` argument of ``train``."""
        def value(name):
            v = getattr(self, name)
            return getattr(self, self.SWEEPABLE_FALLBACKS[name]) if v is None else v

        return {name: jnp.float32(value(name)) for name in self.SWEEPABLE}

    def replace(self, **changes) -> "RLConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def complete_hyperparams(self, hyperparams: Mapping[str, Any] | None) -> dict[str, Any]:
        """Fills missing sweepable settings from the config; rejects unknown names."""
        full = self.hyperparams()
        if hyperparams is None:
            return full
        unknown = sorted(set(hyperparams) - set(full))
        if unknown:
            raise ValueError(
                f"hyperparams has unknown names {unknown}; sweepable are {sorted(full)}"
            )
        full.update({k: jnp.asarray(v, jnp.float32) for k, v in hyperparams.items()})
        return full
