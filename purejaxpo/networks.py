"""Policies built from parts (flax) and their action distributions (distrax).

A policy is described by a :class:`PolicySpec`, which every RL config carries as plain fields
(so a torso is swept, saved and restored like any other static setting):

* a **torso**: ``mlp`` (dense layers of ``hidden_sizes``) or ``cnn`` (convolutions of
  ``conv_channels`` / ``conv_kernels`` / ``conv_strides`` over ``[H, W, C]`` observations,
  flattened, then the dense layers of ``hidden_sizes``), optionally with **memory**: a GRU of
  ``gru_size`` units on top;
* **heads**, the parts an algorithm declares (:class:`PolicyParts`): the actor (categorical for
  discrete actions, Gaussian for continuous ones, with a state-independent or a state-dependent
  log-std; for the off-policy algorithms a squashed Gaussian or a deterministic actor, see
  :data:`ACTORS`) and the critic (a value head, or twin Q networks of the observation and the
  action). :data:`HEADS` is the table of head kinds;
* **separate or shared torsos**: separate (the default for an MLP), each head has its own copy
  of the torso; shared (the default with a CNN or a GRU), one torso feeds every head, each
  head adding its own dense layers of ``head_sizes``. A GRU torso is always shared: its state
  is the policy's memory, one per environment.

Initialisation is orthogonal throughout (the PPO "implementation details": gain sqrt(2) in
hidden layers, 0.01 for the policy head, 1.0 for the value head), with a QR-free initialiser
(:func:`orthogonal`) for dense, convolution and recurrent kernels alike.

Parameters are one dict: ``{"actor": ..., "critic": ...}`` with separate torsos, plus
``"torso"`` when shared, so one optimiser updates them all and the actor can be applied alone
(the rollout runs only the actor; values are computed afterwards for the whole ``[T, B]``
batch at once). The feed-forward MLP policy has the same parameters, names and numbers as
before the parts existed.

Every :class:`Policy` follows one protocol, which the rollout and the updates use:

* ``initial_state(num_envs)``: the per-environment memory at the start of a run (``()`` for a
  feed-forward policy, zeros ``[B, H]`` for a GRU); :func:`reset_memory` zeroes it where an
  episode ended;
* ``act(key, params, state, obs) -> (state, action, log_prob)``: one step of a rollout;
* ``rollout_values(params, traj) -> (values, next_values)``: the critic over a rollout ``[T, B]``;
* ``evaluate(params, minibatch) -> (distribution, value)``: the policy and critic over a
  minibatch (flat transitions, or whole sequences for a recurrent policy, see ``recurrent``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Any, Callable, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS: dict[str, Callable] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
}

TORSOS = ("mlp", "cnn")
"""Torso kinds: dense layers over flat observations, or convolutions over ``[H, W, C]`` ones."""

LOG_STDS = ("free", "state")
"""Gaussian log-std: a free parameter per action dimension, or a dense layer of the features."""

LOG_STD_RANGE = (-5.0, 2.0)
"""A state-dependent log-std is clipped to this range (std 0.0067 to 7.4)."""

# Samples per chunk when a whole rollout goes through a network at once (rollout_values), as
# large as a typical minibatch. XLA's memory analysis of PPO on Breakout-MinAtar (CNN preset,
# CPU): 1024 envs x 128 steps, one run, 5.78 GiB of temporaries in one pass, 0.46 GiB in chunks
# of 8192; the preset's 64 envs with 16 runs vmapped, 5.78 GiB in chunks of 8192 (one pass),
# 1.14 GiB in chunks of 1024; 256 runs (the GPU suite's MinAtar section), 92.5 and 18.2 GiB.
ROLLOUT_CHUNK = 1024


def over_time(f: Callable, x):
    """``f`` over a time-major ``[T, B, ...]`` array, ``ROLLOUT_CHUNK`` samples at a time.

    ``f`` maps ``[..., *item]`` to ``[...]`` (any leading axes, as :meth:`Policy.value`). A
    rollout of at most ``ROLLOUT_CHUNK`` samples is one call (no loop); a larger one a loop over
    chunks of whole time steps, whose memory does not grow with T.
    """
    t, b = x.shape[:2]
    steps = max(1, ROLLOUT_CHUNK // b)
    if steps >= t:
        return f(x)
    return jax.lax.map(f, x, batch_size=steps)


def orthogonal(scale: float = 1.0):
    """Orthogonal kernel initialiser, without QR.

    For a dense kernel ``[fan_in, fan_out]`` and a convolution kernel ``[kh, kw, c_in, c_out]``
    alike (fan-in = ``kh * kw * c_in``): the kernel is drawn as the matrix
    ``[prod(shape[:-1]), shape[-1]]`` and reshaped, as ``jax.nn.initializers.orthogonal`` does.

    Draws the same matrices as ``jax.nn.initializers.orthogonal(scale)`` (up to float32
    rounding): the Q factor, with a positive-diagonal R, of a standard normal matrix, computed by
    Gram-Schmidt orthogonalisation (each column projected out twice, "CGS2") in plain matmuls.

    Why not jax's own: under ``jit(vmap(...))``, e.g. one network per seed, its QR becomes a
    batched LAPACK call, and jaxlib 0.10's CPU runtime can deadlock on it (see
    :mod:`purejaxpo._xla_safety`). Matmuls and a ``fori_loop`` cannot, and cost nothing at init.
    """

    def init(key, shape, dtype=jnp.float32):
        if len(shape) < 2:
            raise ValueError(f"orthogonal init needs a kernel shape of 2 or more dimensions, "
                             f"got {shape}")
        n_rows, n_cols = math.prod(shape[:-1]), shape[-1]
        m, n = max(n_rows, n_cols), min(n_rows, n_cols)
        a = jax.random.normal(key, (m, n), jnp.float32)

        def add_column(j, q):
            v = jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
            for _ in range(2):  # re-orthogonalise once: float32 stays orthogonal to ~1e-6
                v = v - q @ (q.T @ v)
            return jax.lax.dynamic_update_index_in_dim(q, v / jnp.linalg.norm(v), j, axis=1)

        q = jax.lax.fori_loop(0, n, add_column, jnp.zeros((m, n), jnp.float32))
        if n_rows < n_cols:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


SMALL_PRODUCT_ROWS = 8
"""Dense layers over at most this many rows in all multiply and sum (:func:`small_rows_dot`)."""

_RUNS_PER_PROGRAM: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "purejaxpo_runs_per_program", default=None)


@contextlib.contextmanager
def runs_per_program(runs: int | None):
    """While tracing in this context, a program holds ``runs`` vmapped runs (None: unknown).

    :func:`small_rows_dot` multiplies and sums only where a layer's rows times ``runs`` is at
    most :data:`SMALL_PRODUCT_ROWS`; outside this context (``runs`` unknown) every layer is a
    matrix product, as before. :func:`purejaxpo.devices.vmap_runs` and the sweeps enter it
    when XLA:CPU compiles small loops to one kernel (:func:`purejaxpo.devices.use_fused_loops`).
    """
    token = _RUNS_PER_PROGRAM.set(runs)
    try:
        yield
    finally:
        _RUNS_PER_PROGRAM.reset(token)


def small_rows_dot(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """``dot_general`` of the dense layers: a broadcast multiply and a sum for a small input
    (a rollout step over a few envs, in a program of few runs: :func:`runs_per_program`), else
    a matrix product (:func:`dense_product`, whose weight gradient is a row-major product).

    Why: XLA:CPU hands matrix products to a library (YNNPACK), and a loop containing a library
    call runs as a loop of separately dispatched kernels, about 60 per CartPole rollout step
    (0.1-1 us each, several times the step's arithmetic). A multiply and a sum is plain loop
    code, so with :func:`purejaxpo.devices.use_fused_loops` XLA compiles a rollout's whole
    ``scan`` into one kernel. Measured (2-core AMD EPYC, ``experiments/ppo_update_ab.py``,
    variant ``products``): one PPO CartPole update 1.86 ms this way against 2.28 ms with
    products, 4 vmapped runs 8.69 against 9.09 ms, but 8 runs 19.0 against 15.8 ms: over more
    rows the fused kernel's sums are slower than the library's batched products, hence the
    limit on rows times runs. The sum runs over the same terms in another order, so the
    layer's outputs differ from a product's in the last bits; the learning update (hundreds
    of rows) always uses products.
    """
    (contract_lhs, contract_rhs), (batch_lhs, batch_rhs) = dimension_numbers
    # a dense layer's product: x [..., K] @ w [K, N]
    dense = (rhs.ndim == 2 and not batch_lhs and not batch_rhs
             and tuple(contract_lhs) == (lhs.ndim - 1,) and tuple(contract_rhs) == (0,))
    runs = _RUNS_PER_PROGRAM.get()
    rows = math.prod(lhs.shape[:-1]) * (runs or 0)
    if dense and runs is not None and rows <= SMALL_PRODUCT_ROWS:
        out = jnp.sum(lhs[..., :, None] * rhs, axis=-2)
        return out if preferred_element_type is None else out.astype(preferred_element_type)
    if (dense and TRANSPOSED_WEIGHT_GRADIENTS and precision is None
            and preferred_element_type is None):
        return dense_product(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)


TRANSPOSED_WEIGHT_GRADIENTS = True
"""Dense layers differentiate through :func:`dense_product` (False: plain ``dot_general``)."""


@jax.custom_jvp
def dense_product(x, w):
    """``x [..., K] @ w [K, N]``, whose weight gradient is a plain product of a transposed copy
    of ``x``.

    Reverse-mode autodiff of ``x @ w`` gives the weight gradient ``x^T g`` as a ``dot_general``
    contracting the rows of both operands, a form XLA:CPU leaves to its own loop emitter
    instead of a matrix library: for a PPO minibatch of 128 rows it ran a ``[64, 2]`` policy
    head gradient (16k multiply-adds) in about 18 us, a ``[64, 64]`` one in 21-24 us
    (``experiments/ppo_update_ab.py --trace``, 2-core AMD EPYC). Here the tangent rule
    multiplies ``dw`` by the transpose of a ``[K, M]`` copy of ``x`` kept by an optimisation
    barrier, so the transposed rule is ``copy @ g``, a row-major ``[K, M] @ [M, N]`` product.
    A custom JVP rather than a custom VJP, so forward-mode and higher-order derivatives (TRPO's
    Fisher-vector product, a ``jvp`` of a ``grad``) still work. The value is ``x @ w``; the
    gradients are the same sums, possibly in another order.
    """
    return x @ w


@dense_product.defjvp
def _dense_product_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    rows = x.reshape(-1, x.shape[-1])
    copy = jax.lax.optimization_barrier(jnp.swapaxes(rows, 0, 1))  # [K, M], materialised
    return x @ w, dx @ w + (copy.T @ dw).reshape(*x.shape[:-1], w.shape[-1])


def _dense(size: int, scale: float) -> nn.Dense:
    return nn.Dense(size, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros,
                    dot_general=small_rows_dot)


def dense_layers(x, sizes: Sequence[int], activation: str):
    """``x`` through dense layers of ``sizes``, each followed by ``activation``.

    Called inside a compact module, the layers are that module's (``Dense_0``, ``Dense_1``...).
    """
    for size in sizes:
        x = ACTIVATIONS[activation](_dense(size, np.sqrt(2.0))(x))
    return x


@dataclasses.dataclass(frozen=True)
class Conv:
    """Convolution layers: ``channels[i]`` filters of ``kernels[i]`` x ``kernels[i]``,
    stride ``strides[i]``, ``padding`` ``"valid"`` (none) or ``"same"`` (zeros, as
    ``lax``'s "SAME": ``ceil(H / stride)`` rows out), each followed by the activation; then
    an average pooling of ``pool`` x ``pool`` windows (stride ``pool``; 1: none)."""

    channels: tuple[int, ...] = ()
    kernels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pool: int = 1
    padding: str = "valid"

    def __call__(self, x, activation: str):
        """``[..., H, W, C] -> [..., H' * W' * C']`` (called inside a compact module)."""
        for ch, k, s in zip(self.channels, self.kernels, self.strides):
            x = ACTIVATIONS[activation](PatchConv(ch, k, s, self.padding)(x))
        if self.pool > 1:
            p = self.pool
            h, w, c = x.shape[-3] // p, x.shape[-2] // p, x.shape[-1]
            x = x[..., : h * p, : w * p, :].reshape(*x.shape[:-3], h, p, w, p, c).mean((-4, -2))
        return x.reshape(*x.shape[:-3], -1)

    def conv_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(H', W', C')`` after the convolutions (before pooling) for an ``[H, W, C]`` input."""
        h, w, c = shape
        for ch, k, s in zip(self.channels, self.kernels, self.strides):
            h, w, c = conv_size(h, k, s, self.padding), conv_size(w, k, s, self.padding), ch
        return h, w, c

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(H', W', C')`` of the last layer (pooled) for an ``[H, W, C]`` input."""
        h, w, c = self.conv_shape(shape)
        return h // self.pool, w // self.pool, c


PADDINGS = ("valid", "same")
"""Convolution paddings: none, or zeros so that ``ceil(H / stride)`` rows come out."""


def conv_size(n: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a convolution over ``n`` rows (``lax``'s VALID / SAME rule)."""
    if padding == "same":
        return -(-n // stride)
    return (n - kernel) // stride + 1


def same_pads(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """``(before, after)`` zero rows of a SAME convolution, as ``lax.padtype_to_pads``."""
    total = max((conv_size(n, kernel, stride, "same") - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


class PatchConv(nn.Module):
    """A convolution as one matmul over image patches: ``[..., H, W, C] -> [..., H', W',
    features]``, kernel ``[k, k, C, features]`` (orthogonal, gain sqrt(2)), zero bias;
    ``padding`` ``"valid"`` or ``"same"`` (zero rows and columns around the image first, as
    ``lax``'s "SAME").

    Why not ``nn.Conv``: on XLA:CPU, the small convolutions of a MinAtar policy (10 x 10
    images), their gradients and their ``vmap`` over seeds (a grouped convolution) ran PPO
    at about 1.8k env steps/s on 2 cores; gathering the k x k patches with k^2 slices and
    multiplying by the flattened kernel is the same arithmetic in ordinary dense ops, which
    XLA batches and fuses well: 9.8k env steps/s in the same run (measured 2026-11-30, jax
    0.10.2; the README's "Policies from parts"). ``tests/test_policy_parts.py`` checks it
    against a NumPy loop and ``lax.conv_general_dilated``.
    """

    features: int
    kernel: int
    stride: int = 1
    padding: str = "valid"

    @nn.compact
    def __call__(self, x):
        k, s = self.kernel, self.stride
        c = x.shape[-1]
        if self.padding == "same":
            pads = [same_pads(x.shape[-3], k, s), same_pads(x.shape[-2], k, s), (0, 0)]
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + pads)
        w = self.param("kernel", orthogonal(np.sqrt(2.0)), (k, k, c, self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        h_out = (x.shape[-3] - k) // s + 1
        w_out = (x.shape[-2] - k) // s + 1
        patches = jnp.concatenate([
            x[..., i:i + s * (h_out - 1) + 1:s, j:j + s * (w_out - 1) + 1:s, :]
            for i in range(k) for j in range(k)], axis=-1)  # [..., H', W', k * k * C]
        return patches @ w.reshape(k * k * c, self.features) + b


class Trunk(nn.Module):
    """The torso: optional convolutions, then dense layers, then an optional GRU.

    Without a GRU: ``x -> features``. With one (``gru_size > 0``): ``(hidden, x) -> (hidden,
    features)``, one step, where features are the new hidden state ``[..., H]``.
    """

    conv: Conv | None
    hidden_sizes: tuple[int, ...]
    activation: str
    gru_size: int = 0

    @nn.compact
    def __call__(self, *args):
        hidden, x = args if self.gru_size else (None, args[0])
        if self.conv is not None:
            x = self.conv(x, self.activation)
        x = dense_layers(x, self.hidden_sizes, self.activation)
        if not self.gru_size:
            return x
        cell = nn.GRUCell(features=self.gru_size, kernel_init=orthogonal(1.0),
                          recurrent_kernel_init=orthogonal(1.0))
        return cell(hidden, x)


def categorical_head(branch: "Branch", x):
    """Logits ``[..., n]`` (gain 0.01: the policy starts near uniform)."""
    return _dense(branch.out_dim, 0.01)(x)


def gaussian_head(branch: "Branch", x):
    """``(mean, log_std)``, each ``[..., n]``: a free log-std parameter (``"free"``, the same
    for every state, starting at 0) or a dense layer of the features (``"state"``, clipped to
    :data:`LOG_STD_RANGE`)."""
    mean = _dense(branch.out_dim, 0.01)(x)
    if branch.log_std == "state":
        return mean, jnp.clip(_dense(branch.out_dim, 0.01)(x), *LOG_STD_RANGE)
    log_std = branch.param("log_std", nn.initializers.zeros, (branch.out_dim,))
    return mean, jnp.broadcast_to(log_std, mean.shape)


def value_head(branch: "Branch", x):
    """V ``[...]`` (gain 1.0)."""
    del branch
    return _dense(1, 1.0)(x)[..., 0]


def deterministic_head(branch: "Branch", x):
    """Pre-tanh actions ``[..., n]`` of a deterministic actor (TD3; gain 0.01)."""
    return _dense(branch.out_dim, 0.01)(x)


HEADS: dict[str, Callable] = {
    "categorical": categorical_head,
    "gaussian": gaussian_head,
    "deterministic": deterministic_head,
    "value": value_head,
}
"""Head kinds: ``head(branch, features)``, called inside the :class:`Branch` module's compact
``__call__`` (so its layers and parameters are the branch's)."""


class Branch(nn.Module):
    """One head with the layers below it that are its own: ``x -> head output``.

    With separate torsos the branch holds a whole torso (``trunk``), with a shared torso only
    the head's own dense layers (``head_sizes``). The layers live in the branch's own scope
    (``Conv_0``..., ``Dense_0``..., then the head's), so the feed-forward MLP actor and critic
    have the parameter names they always had.
    """

    conv: Conv | None
    hidden_sizes: tuple[int, ...]
    activation: str
    head: str
    out_dim: int = 1
    log_std: str = "free"

    @nn.compact
    def __call__(self, x):
        if self.conv is not None:
            x = self.conv(x, self.activation)
        x = dense_layers(x, self.hidden_sizes, self.activation)
        return HEADS[self.head](self, x)


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


@dataclasses.dataclass(frozen=True)
class Policy:
    """A policy (and critic) built from a :class:`PolicySpec` for an environment's spaces.

    Attributes:
      obs_shape: shape of one observation.
      num_actions: number of discrete actions (discrete policies).
      action_dim: size of the action vector (continuous policies); 0 for discrete.
      action_low, action_high: bounds the env accepts; sampled actions are clipped to them
        before stepping (the unclipped action is kept for the log-probability).
      spec: the network's description.
    """

    obs_shape: tuple[int, ...]
    num_actions: int = 0
    action_dim: int = 0
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    spec: PolicySpec = PolicySpec()

    def __post_init__(self):
        self.spec.check_observation(self.obs_shape)

    @classmethod
    def for_env(cls, venv, spec: PolicySpec = PolicySpec()) -> "Policy":
        """The policy that fits a vectorised environment's spaces (``ValueError`` if the torso
        cannot take its observations)."""
        space = venv.action_space
        obs_shape = tuple(venv.observation_shape)
        if venv.is_discrete:
            return cls(obs_shape, num_actions=int(space.n), spec=spec)
        low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape).reshape(-1)
        return cls(obs_shape, action_dim=int(np.prod(space.shape)),
                   action_low=tuple(float(v) for v in low),
                   action_high=tuple(float(v) for v in high), spec=spec)

    @property
    def continuous(self) -> bool:
        return self.action_dim > 0

    @property
    def recurrent(self) -> bool:
        """True: the update needs whole sequences (``Rollout.batch``)."""
        return self.spec.gru_size > 0

    @property
    def has_critic(self) -> bool:
        return "critic" in self.spec.parts.heads

    @property
    def actor_kind(self) -> str:
        """``categorical``, ``gaussian``, ``squashed_gaussian`` or ``deterministic``."""
        kind = self.spec.parts.actor
        if kind == "auto":
            return "gaussian" if self.continuous else "categorical"
        return kind

    @property
    def squashed(self) -> bool:
        """True: actions live in ``[-1, 1]`` and are scaled to the env's bounds."""
        return self.actor_kind in ("squashed_gaussian", "deterministic")

    # The modules.

    def _branch(self, name: str) -> Branch:
        spec = self.spec
        if name == "actor":
            kind = self.actor_kind
            head = "gaussian" if kind == "squashed_gaussian" else kind
            out = self.num_actions if kind == "categorical" else self.action_dim
        elif name in ("critic", "q"):
            head, out = "value", 1
        else:
            raise ValueError(f"unknown policy part {name!r}")
        if spec.shared:
            return Branch(None, spec.head_sizes, spec.activation, head, out, spec.log_std)
        return Branch(spec.conv, spec.hidden_sizes, spec.activation, head, out, spec.log_std)

    @property
    def torso(self) -> Trunk | None:
        """The shared torso (None with separate torsos)."""
        if not self.spec.shared:
            return None
        spec = self.spec
        return Trunk(spec.conv, spec.hidden_sizes, spec.activation, spec.gru_size)

    def _prepare(self, obs):
        """``[..., *obs_shape]`` -> the torso's input: flat ``[..., D]`` for an MLP, the
        observations as they are for a CNN."""
        if self.spec.torso == "cnn":
            return obs
        return obs.reshape(*obs.shape[: obs.ndim - len(self.obs_shape)], -1)

    def init(self, key) -> dict:
        """Parameters: ``{"torso"?: ..., "actor": ..., "critic"?: ...}``.

        The key is split into one key per group, in that order (torso first when shared).
        """
        names = self.spec.parts.heads
        torso = self.torso
        keys = jax.random.split(key, len(names) + (torso is not None))
        x = self._prepare(jnp.zeros((1, *self.obs_shape), jnp.float32))
        params = {}
        if torso is not None:
            k_torso, keys = keys[0], keys[1:]
            if self.recurrent:
                hidden = self.initial_state(1)
                params["torso"] = torso.init(k_torso, hidden, x)
                x = hidden
            else:
                params["torso"] = torso.init(k_torso, x)
                x = jax.eval_shape(torso.apply, params["torso"], x)
                x = jnp.zeros(x.shape, x.dtype)
        for name, k in zip(names, keys):
            if name == "q":  # num_q networks, stacked: each leaf [num_q, ...]
                xa = jnp.concatenate([x, jnp.zeros((1, self.action_dim), x.dtype)], -1)
                ks = jax.random.split(k, self.spec.parts.num_q)
                params[name] = jax.vmap(lambda kq: self._branch("q").init(kq, xa))(ks)
            else:
                params[name] = self._branch(name).init(k, x)
        return params

    def q_values(self, q_params, obs, action) -> jax.Array:
        """Q(obs, action) of every Q network: ``[..., *obs_shape], [..., A] -> [num_q, ...]``.

        ``q_params`` is ``params["q"]`` (or a target copy of it); ``action`` is in the actor's
        units (``[-1, 1]`` for a squashed actor).
        """
        x = jnp.concatenate([self._prepare(obs), action.astype(jnp.float32)], -1)
        return jax.vmap(lambda p: self._branch("q").apply(p, x))(q_params)

    def features(self, params, obs):
        """The heads' input for feed-forward observations ``[..., *obs_shape]``."""
        if self.recurrent:
            raise ValueError("a recurrent policy's features need its memory: use step/unroll")
        x = self._prepare(obs)
        if self.spec.shared:
            return self.torso.apply(params["torso"], x)
        return x

    def head_distribution(self, params, features) -> distrax.Distribution:
        """The actor head on the heads' input ``[..., F]`` (see :meth:`features`)."""
        out = self._branch("actor").apply(params["actor"], features)
        kind = self.actor_kind
        if kind == "squashed_gaussian":
            return SquashedGaussian(*out)
        if kind == "deterministic":
            return DeterministicAction(jnp.tanh(out))
        if kind == "gaussian":
            mean, log_std = out
            return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
        return distrax.Categorical(logits=out)

    def head_value(self, params, features) -> jax.Array:
        """The critic head on the heads' input: ``[..., F] -> [...]``."""
        return self._branch("critic").apply(params["critic"], features)

    def distribution(self, params, obs) -> distrax.Distribution:
        """The policy pi(.|obs) for feed-forward observations ``[..., *obs_shape]``."""
        return self.head_distribution(params, self.features(params, obs))

    def value(self, params, obs) -> jax.Array:
        """V(obs), ``[..., *obs_shape] -> [...]`` (feed-forward)."""
        return self.head_value(params, self.features(params, obs))

    # Memory.

    def initial_state(self, num_envs: int) -> Any:
        """Memory carried through rollouts: ``()``, or zeros ``[B, H]`` with a GRU."""
        if not self.recurrent:
            return ()
        return jnp.zeros((num_envs, self.spec.gru_size), jnp.float32)

    def step(self, params, hidden, obs) -> jax.Array:
        """The next hidden state ``[..., H]`` after ``obs`` ``[..., *obs_shape]`` (no reset)."""
        hidden, _ = self.torso.apply(params["torso"], hidden, self._prepare(obs))
        return hidden

    def unroll(self, params, hidden, obs, resets) -> jax.Array:
        """Runs the GRU over sequences.

        Args:
          params: the parameters.
          hidden: ``[B, H]`` state before the first step.
          obs: ``[T, B, *obs_shape]`` observations.
          resets: ``[T, B]`` bool, true where ``obs[t]`` starts an episode (memory zeroed first).

        Returns:
          ``[T, B, H]``: the state after each step (the heads' input).
        """

        def body(h, inputs):
            obs_t, reset_t = inputs
            h = self.step(params, reset_memory(h, reset_t), obs_t)
            return h, h

        return jax.lax.scan(body, hidden, (obs, resets))[1]

    # The policy protocol (see the module docstring).

    def act(self, key, params, state, obs):
        """One rollout step for ``[B, *obs_shape]``: ``(state, action, log_prob)``."""
        if self.recurrent:
            state = self.step(params, state, obs)
            dist = self.head_distribution(params, state)
        else:
            dist = self.distribution(params, obs)
        action, log_prob = dist.sample_and_log_prob(seed=key)
        return state, action, log_prob

    def rollout_values(self, params, traj):
        """``(V(obs_t), V(final_obs_t))``, each ``[T, B]``, for a rollout (a ``Transition``).

        A recurrent policy unrolls from the rollout's initial state; ``next_values[t]`` is V
        of ``final_obs[t]`` after the state of step t (not reset), so a truncated episode
        bootstraps from its own memory.
        """
        if not self.recurrent:
            value = lambda obs: over_time(lambda o: self.value(params, o), obs)  # noqa: E731
            return value(traj.obs), value(traj.final_obs)
        done = jnp.logical_or(traj.terminated, traj.truncated)
        hiddens = self.unroll(params, traj.agent_state, traj.obs, episode_starts(done))
        next_hiddens = self.step(params, hiddens, traj.final_obs)
        return self.head_value(params, hiddens), self.head_value(params, next_hiddens)

    def evaluate(self, params, minibatch):
        """``(pi(.|obs), V(obs))`` over a minibatch (V is None without a critic).

        Feed-forward: transitions, ``minibatch["obs"]`` ``[N, *obs_shape]``, the torso run
        once for both heads. Recurrent: whole sequences, env-major as the update's
        minibatches: ``obs`` ``[N, T, *obs_shape]``, ``resets`` ``[N, T]`` and
        ``agent_state`` ``[N, H]`` (each sequence's initial state); ``[N, T]`` outputs.
        """
        if self.recurrent:
            time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
            features = time_major(self.unroll(params, minibatch["agent_state"],
                                              time_major(minibatch["obs"]),
                                              time_major(minibatch["resets"])))
            dist = self.head_distribution(params, features)
            return dist, self.head_value(params, features) if self.has_critic else None
        features = self.features(params, minibatch["obs"])  # the prepared obs when separate
        value = self.head_value(params, features) if self.has_critic else None
        return self.head_distribution(params, features), value

    def env_action(self, action):
        """The action to send to the env: ``[-1, 1]`` actions of a squashed actor scaled to the
        env's bounds, other continuous actions clipped to them."""
        if self.squashed:
            low, high = jnp.asarray(self.action_low), jnp.asarray(self.action_high)
            return low + 0.5 * (jnp.clip(action, -1.0, 1.0) + 1.0) * (high - low)
        if self.continuous:
            return jnp.clip(action, jnp.asarray(self.action_low), jnp.asarray(self.action_high))
        return action


class SquashedGaussian:
    """``tanh(u)``, ``u ~ N(mean, exp(log_std))`` diagonal: SAC's actor, actions in ``[-1, 1]``.

    The part of distrax's distribution interface the rollout and the updates use;
    ``sample_and_log_prob`` is reparameterised (differentiable in ``mean`` and ``log_std``)
    and its log-density is :func:`purejaxpo.td.squashed_gaussian_log_prob`.
    """

    def __init__(self, mean, log_std):
        self.mean, self.log_std = mean, log_std

    def sample_and_log_prob(self, seed):
        from purejaxpo.td import squashed_gaussian_log_prob

        u = self.mean + jnp.exp(self.log_std) * jax.random.normal(seed, self.mean.shape)
        return jnp.tanh(u), squashed_gaussian_log_prob(self.mean, self.log_std, u)

    def sample(self, seed):
        return self.sample_and_log_prob(seed)[0]

    def log_prob(self, action):
        """At ``action`` in ``(-1, 1)`` (clipped 1e-6 inside, where atanh stays finite)."""
        from purejaxpo.td import squashed_gaussian_log_prob

        u = jnp.arctanh(jnp.clip(action, -1.0 + 1e-6, 1.0 - 1e-6))
        return squashed_gaussian_log_prob(self.mean, self.log_std, u)

    def mode(self):
        """``tanh(mean)``: the deterministic action an evaluation plays."""
        return jnp.tanh(self.mean)


class DeterministicAction:
    """A deterministic actor's action as a distribution (log-probability 0): TD3's."""

    def __init__(self, action):
        self.action = action

    def sample_and_log_prob(self, seed):
        del seed
        return self.action, jnp.zeros(self.action.shape[:-1])

    def sample(self, seed):
        return self.action

    def log_prob(self, action):
        return jnp.zeros(action.shape[:-1])

    def mode(self):
        return self.action


def reset_memory(state, done):
    """Zeroes a policy's per-environment memory where an episode ended.

    Args:
      state: pytree of ``[B, ...]`` leaves (``()`` for a feed-forward policy: returned as is).
      done: ``[B]`` bool, the episode ended at this step (terminated or truncated).
    """
    keep = 1.0 - done.astype(jnp.float32)
    return jax.tree_util.tree_map(
        lambda h: h * keep.reshape(keep.shape + (1,) * (h.ndim - keep.ndim)).astype(h.dtype), state
    )


def episode_starts(done):
    """``[T, B]`` reset flags from ``[T, B]`` done flags: true at t where step t-1 ended an episode.

    The first step's flag is false: a rollout's initial memory was already reset by
    :func:`reset_memory` at the end of the previous rollout.
    """
    return jnp.concatenate([jnp.zeros_like(done[:1]), done[:-1]], axis=0)
