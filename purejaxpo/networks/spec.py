"""The description of a policy's network (:class:`PolicySpec`), carried by every RL config as
plain fields, and its validation (a bad value raises ``ValueError`` naming the field).

* a **torso**: ``mlp`` (dense layers of ``hidden_sizes``) or ``cnn`` (convolutions of
  ``conv_channels`` / ``conv_kernels`` / ``conv_strides`` over ``[H, W, C]`` observations,
  flattened, then the dense layers of ``hidden_sizes``), optionally with **memory**: a GRU of
  ``gru_size`` units on top;
* **heads**, the parts an algorithm declares (:class:`PolicyParts`): the actor (categorical for
  discrete actions, Gaussian for continuous ones, with a state-independent or a state-dependent
  log-std; for the off-policy algorithms a squashed Gaussian or a deterministic actor, see
  :data:`ACTORS`) and the critic (a value head, or twin Q networks of the observation and the
  action);
* **separate or shared torsos**: separate (the default for an MLP), each head has its own copy
  of the torso; shared (the default with a CNN or a GRU), one torso feeds every head, each
  head adding its own dense layers of ``head_sizes``. A GRU torso is always shared: its state
  is the policy's memory, one per environment.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from purejaxpo.networks.layers import ACTIVATIONS, PADDINGS, Conv

TORSOS = ("mlp", "cnn")
"""Torso kinds: dense layers over flat observations, or convolutions over ``[H, W, C]`` ones."""

LOG_STDS = ("free", "state")
"""Gaussian log-std: a free parameter per action dimension, or a dense layer of the features."""

ACTORS = ("auto", "squashed_gaussian", "deterministic")
"""Actor kinds: ``auto`` (categorical for discrete actions, Gaussian for continuous ones),
``squashed_gaussian`` (SAC: ``tanh`` of a Gaussian sample, actions in ``[-1, 1]``) and
``deterministic`` (TD3: ``tanh`` of the head, actions in ``[-1, 1]``). Actions in ``[-1, 1]``
are scaled to the environment's bounds when sent to it (:meth:`Policy.env_action`)."""


@dataclasses.dataclass(frozen=True)
class PolicyParts:
    """What an algorithm needs from a policy (declared by its config's ``policy_parts``).

    Attributes:
      heads: the parts, in order: ``"actor"`` and, for algorithms with a critic, ``"critic"``
        (a state value, V(s)) or ``"q"`` (``num_q`` action values Q(s, a), each with its own
        torso, the action joined to the flat observation).
      memory: the algorithm's update handles recurrent policies (whole-sequence minibatches).
      shared_torso: the algorithm can train a torso shared by its heads (TRPO cannot: its
        trust region is over the actor's parameters alone).
      actor: the actor's kind (:data:`ACTORS`).
      num_q: Q networks with a ``"q"`` head (twin: 2).
    """

    heads: tuple[str, ...] = ("actor", "critic")
    memory: bool = False
    shared_torso: bool = True
    actor: str = "auto"
    num_q: int = 2


def _fail(field: str, value: Any, valid: str) -> None:
    raise ValueError(f"{field}={value!r} is invalid: {valid}")


def _check_sizes(field: str, sizes, *, empty_ok: bool) -> None:
    if not isinstance(sizes, tuple) or (not sizes and not empty_ok) or any(
        isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes
    ):
        _fail(field, sizes, ("a list" if empty_ok else "a non-empty list")
              + " of integers >= 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyFields:
    """The fields that describe a policy's network: those of :class:`PolicySpec`, and of
    every RL config (:class:`~purejaxpo.config.RLConfig` inherits them), declared once.

    Attributes:
      torso: ``"mlp"`` or ``"cnn"`` (:data:`TORSOS`).
      hidden_sizes: dense layers of the torso (after the convolutions for a CNN).
      conv_channels, conv_kernels, conv_strides: one entry per convolution layer (CNN only):
        filters, square kernel size, stride.
      conv_padding: ``"valid"`` (no padding) or ``"same"`` (zeros around the image, so that
        ``ceil(H / stride)`` rows come out, as ``flax.linen.Conv``'s default).
      conv_pool: average pooling of conv_pool x conv_pool after the convolutions (1: none);
        it must divide the convolutions' output, so that no edge of the image is dropped.
      gru_size: 0 for a feed-forward policy; H > 0 puts a GRU of H units on top of the torso
        (memory; the torso is then shared).
      shared_torso: one torso for every head (None: shared with a CNN or a GRU, separate with
        an MLP).
      head_sizes: dense layers of each head above a shared torso (ignored when separate).
      activation: one of :data:`ACTIVATIONS`.
      log_std: Gaussian actors' log-std, ``"free"`` or ``"state"`` (:data:`LOG_STDS`).
    """

    torso: str = "mlp"
    hidden_sizes: tuple[int, ...] = (64, 64)
    conv_channels: tuple[int, ...] = ()
    conv_kernels: tuple[int, ...] = ()
    conv_strides: tuple[int, ...] = ()
    conv_padding: str = "valid"
    conv_pool: int = 1
    gru_size: int = 0
    shared_torso: bool | None = None
    head_sizes: tuple[int, ...] = ()
    activation: str = "tanh"
    log_std: str = "free"


SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(PolicyFields))
"""The config fields that describe a policy (each a static setting of every RL config)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicySpec(PolicyFields):
    """A policy's network: the :class:`PolicyFields` and the algorithm's :class:`PolicyParts`.

    Raises ``ValueError`` naming the field on construction, as the configs do.
    """

    parts: PolicyParts = PolicyParts()

    def __post_init__(self):
        for name in ("hidden_sizes", "conv_channels", "conv_kernels", "conv_strides",
                     "head_sizes"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        if self.torso not in TORSOS:
            _fail("torso", self.torso, f"must be one of {list(TORSOS)}")
        _check_sizes("hidden_sizes", self.hidden_sizes, empty_ok=self.torso == "cnn")
        if self.torso == "cnn":
            for name in ("conv_channels", "conv_kernels", "conv_strides"):
                _check_sizes(name, getattr(self, name), empty_ok=False)
            n = len(self.conv_channels)
            for name in ("conv_kernels", "conv_strides"):
                if len(getattr(self, name)) != n:
                    _fail(name, getattr(self, name),
                          f"must have one entry per convolution layer, as conv_channels "
                          f"{self.conv_channels} ({n})")
        if isinstance(self.conv_pool, bool) or not isinstance(self.conv_pool, int) \
                or self.conv_pool < 1:
            _fail("conv_pool", self.conv_pool, "must be an integer >= 1 (1: no pooling)")
        if self.conv_padding not in PADDINGS:
            _fail("conv_padding", self.conv_padding, f"must be one of {list(PADDINGS)}")
        if isinstance(self.gru_size, bool) or not isinstance(self.gru_size, int) \
                or self.gru_size < 0:
            _fail("gru_size", self.gru_size, "must be an integer >= 0 (0: no memory)")
        if self.shared_torso is not None and not isinstance(self.shared_torso, bool):
            _fail("shared_torso", self.shared_torso, "must be true, false or unset")
        _check_sizes("head_sizes", self.head_sizes, empty_ok=True)
        if self.activation not in ACTIVATIONS:
            _fail("activation", self.activation, f"must be one of {sorted(ACTIVATIONS)}")
        if self.log_std not in LOG_STDS:
            _fail("log_std", self.log_std, f"must be one of {list(LOG_STDS)}")
        if self.gru_size and self.shared_torso is False:
            _fail("shared_torso", False, f"must be true with gru_size={self.gru_size}: the "
                  "GRU's state is one memory per environment, shared by every head")
        if self.gru_size and not self.parts.memory:
            _fail("gru_size", self.gru_size, "must be 0: this algorithm's update does not "
                  "train recurrent policies (ppo, ppo_rnn, a2c and reinforce do)")
        if "q" in self.parts.heads and self.torso != "mlp":
            _fail("torso", self.torso, "must be mlp for this algorithm (its Q networks join "
                  "the action to the flat observation)")
        if self.shared and not self.parts.shared_torso:
            _fail("shared_torso", self.shared_torso, "must be false for this algorithm (its "
                  "update needs the actor's parameters apart from the critic's; a CNN or "
                  "a GRU torso would be shared)")

    @property
    def shared(self) -> bool:
        """Whether one torso feeds every head."""
        if self.shared_torso is None:
            return self.torso == "cnn" or self.gru_size > 0
        return self.shared_torso

    @property
    def conv(self) -> Conv | None:
        if self.torso != "cnn":
            return None
        return Conv(self.conv_channels, self.conv_kernels, self.conv_strides, self.conv_pool,
                    self.conv_padding)

    def check_observation(self, obs_shape: tuple[int, ...]) -> None:
        """Raises ``ValueError`` if the torso cannot take observations of ``obs_shape``."""
        if self.torso != "cnn":
            return
        if len(obs_shape) != 3:
            _fail("torso", "cnn", f"needs image observations [H, W, C]; this environment's "
                  f"are {list(obs_shape)} (use torso=mlp)")
        h, w, _ = self.conv.output_shape(obs_shape)
        if h < 1 or w < 1:
            _fail("conv_kernels", self.conv_kernels, f"the convolutions (kernels "
                  f"{self.conv_kernels}, strides {self.conv_strides}, pool {self.conv_pool}) "
                  f"leave nothing of a "
                  f"{obs_shape[0]}x{obs_shape[1]} observation")
        ch, cw, _ = self.conv.conv_shape(obs_shape)
        if ch % self.conv_pool or cw % self.conv_pool:
            _fail("conv_pool", self.conv_pool, f"must divide the convolutions' {ch}x{cw} "
                  f"output of a {obs_shape[0]}x{obs_shape[1]} observation (padding "
                  f"{self.conv_padding!r}): else pooling drops its last rows or columns, "
                  "the edge of the image (try conv_padding=same)")
