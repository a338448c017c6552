"""The layers of purejaxpo's policies (flax): dense and convolution layers with orthogonal
initialisation, the torso, and the heads.

Initialisation is orthogonal throughout (the PPO "implementation details": gain sqrt(2) in
hidden layers, 0.01 for the policy head, 1.0 for the value head), with a QR-free initialiser
(:func:`orthogonal`) for dense, convolution and recurrent kernels alike. Layers are plain
``flax.linen.Dense`` and ``flax.linen.Conv``; a backend may swap their product or convolution
for its own with the same parameters (:mod:`purejaxpo.backends`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo import backends

ACTIVATIONS: dict[str, Callable] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
}

LOG_STD_RANGE = (-5.0, 2.0)
"""A state-dependent log-std is clipped to this range (std 0.0067 to 7.4)."""

def orthogonal(scale: float = 1.0):
    """Orthogonal kernel initialiser, without QR.

    For a dense kernel ``[fan_in, fan_out]`` and a convolution kernel ``[kh, kw, c_in, c_out]``
    alike (fan-in = ``kh * kw * c_in``): the kernel is drawn as the matrix
    ``[prod(shape[:-1]), shape[-1]]`` and reshaped, as ``jax.nn.initializers.orthogonal`` does.

    Draws the same matrices as ``jax.nn.initializers.orthogonal(scale)`` (up to float32
    rounding): the Q factor, with a positive-diagonal R, of a standard normal matrix, computed by
    Gram-Schmidt orthogonalisation (each column projected out twice, "CGS2") in plain matmuls.

    Why not jax's own: under ``jit(vmap(...))``, e.g. one network per seed, its QR becomes a
    batched LAPACK call, and jaxlib 0.10's CPU runtime can deadlock on it (the CPU
    backend's ``use_safe_scheduler`` tells the story). Matmuls and a ``fori_loop`` cannot, and cost
    nothing at init.
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


def _dense(size: int, scale: float) -> nn.Dense:
    """A dense layer of ``size`` units, orthogonal kernel of gain ``scale``, zero bias; its
    product is the active backend's ``dense_dot_general`` (:mod:`purejaxpo.backends`)."""
    return nn.Dense(size, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros,
                    dot_general=backends.active().dense_dot_general)


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
        for i, (ch, k, s) in enumerate(zip(self.channels, self.kernels, self.strides)):
            x = ACTIVATIONS[activation](conv_layer(ch, k, s, self.padding, name=f"Conv_{i}")(x))
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


def conv_layer(features: int, kernel: int, stride: int, padding: str, *, name: str):
    """A convolution of ``features`` filters of ``kernel`` x ``kernel``, stride ``stride``,
    ``padding`` ``"valid"`` or ``"same"``, orthogonal kernel (gain sqrt(2)), zero bias:
    ``flax.linen.Conv``, or the active backend's ``conv`` with the same parameters
    (:mod:`purejaxpo.backends`)."""
    init = orthogonal(np.sqrt(2.0))
    hook = backends.active().conv
    if hook is not None:
        return hook(features, kernel, stride, padding, init, name)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=padding.upper(), kernel_init=init, bias_init=nn.initializers.zeros,
                   name=name)


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
