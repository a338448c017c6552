"""The skeleton every on-policy algorithm shares: environments, networks, the update scan."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from purejaxpo.config import RLConfig
from purejaxpo.envs import make, make_vec_env
from purejaxpo.networks import ActorCritic


class TrainResult(NamedTuple):
    """What ``train`` returns.

    Attributes:
      params: final network parameters ``{"actor": ..., "critic": ...}``.
      metrics: dict of arrays ``[num_updates]`` (with a leading axis per ``vmap``).
    """

    params: Any
    metrics: dict[str, jax.Array]


def build_env(config: RLConfig, gamma):
    """The vectorised training environment for ``config`` (``gamma`` may be traced)."""
    env, env_params = make(config.env)
    return make_vec_env(
        env,
        env_params,
        config.num_envs,
        normalize_obs=config.normalize_obs,
        normalize_reward=config.normalize_reward,
        gamma=gamma,
    )


def build_policy(config: RLConfig) -> ActorCritic:
    """The actor-critic network that fits ``config.env`` (built without tracing anything)."""
    env, env_params = make(config.env)
    venv = make_vec_env(env, env_params, 1)
    return ActorCritic.for_env(venv, config.hidden_sizes, config.activation)


def scan_updates(update: Callable, carry, num_updates: int,
                 progress: Callable[[int], None] | None = None):
    """Runs ``update(carry) -> (carry, metrics)`` ``num_updates`` times in one ``lax.scan``.

    ``progress``, if given, is called on the host with the number of updates done after each
    update (through ``jax.debug.callback``; it never changes results). Under ``vmap`` it may be
    called once per batch element with the same count.
    """

    def body(carry, index):
        carry, metrics = update(carry)
        if progress is not None:
            jax.debug.callback(progress, index + 1)
        return carry, metrics

    return jax.lax.scan(body, carry, jnp.arange(num_updates))
