"""The one seam through which a backend's speed-ups enter the library.

The library's model and algorithm code is written as its anchors write it: plain flax layers,
``jax.random`` keys, ``jax.random.permutation`` for minibatches, every decoding step for every
row. Code that exists only to make one backend fast (today: XLA on a CPU,
:mod:`purejaxpo.backends.cpu`) enters through the few hooks of a :class:`Backend`, each read
where the library builds a program (at trace time):

* ``dense_dot_general``: the ``dot_general`` of the library's dense layers (flax's
  ``nn.Dense(..., dot_general=...)`` argument; None: flax's default);
* ``conv``: the convolution layer of the CNN torso (None: ``flax.linen.Conv``);
* ``loop_key``: applied to a key before a compiled loop splits it into per-step keys (the
  rollout, LM decoding); identity by default;
* ``permutation``: the shuffle of a minibatch epoch (``jax.random.permutation``);
* ``trace_runs``: wraps a function of vmapped runs while it is traced, told how many runs one
  program holds (:func:`purejaxpo.devices.vmap_runs`, the sweeps); identity by default;
* ``decoding_tail`` and ``decoding_noise``: how :func:`purejaxpo.lm.sampling.generate`'s
  trainers decode (None: every row to the end, each step drawing its own noise).

A backend is activated by the call that sets it up (``purejaxpo.backends.cpu.enable()``), or
for a block of code by :func:`use`. Nothing is activated on import: ``import purejaxpo`` runs
the plain code everywhere, and ``purejaxpo`` commands enable the CPU backend when JAX runs on
a CPU (``--no-fused-loops`` turns it off). A program traced under a backend keeps what it was
traced with; results can differ between backends in the last bits (another summation order)
and, where a hook is not the textbook operation (the CPU backend's packed-word shuffle), as
its docstring says.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable

import jax


def _same_key(key):
    return key


def _same_fn(fn, runs):
    del runs
    return fn


def _no_tail(batch, new_tokens):
    del batch, new_tokens
    return None


def _no_noise(keys, shape, dtype):
    del keys, shape, dtype
    return None


@dataclasses.dataclass(frozen=True)
class Backend:
    """The hooks of one backend (see the module docstring). Every field has the plain
    behaviour as its default, so a backend names only what it changes.

    Attributes:
      name: shown by ``purejaxpo`` commands and benchmarks.
      dense_dot_general: ``dot_general(lhs, rhs, dimension_numbers, precision=None,
        preferred_element_type=None)`` of the library's dense layers, or None.
      conv: ``conv(features, kernel, stride, padding, kernel_init, name) -> flax module``
        mapping ``[..., H, W, C]`` to ``[..., H', W', features]`` with the parameters
        ``kernel [k, k, C, features]`` and ``bias [features]`` of ``flax.linen.Conv``, or None.
      loop_key: ``key -> key`` before a compiled loop splits it (the same numbers, another
        implementation of the same stream).
      permutation: ``(key, n) -> int32 [n]`` the order of one minibatch epoch.
      trace_runs: ``(fn, runs) -> fn`` around a function of ``runs`` vmapped runs (one
        program's share), applied while it is traced.
      decoding_tail: ``(batch, new_tokens) -> tail or None``, the ``tail`` the LM trainers pass
        to :func:`~purejaxpo.lm.sampling.generate` (an object with ``head_slots`` and
        ``decode``, see there).
      decoding_noise: ``(keys [N], shape, dtype) -> [N, *shape] Gumbel noise or None``: every
        decoding step's noise drawn before the loop (the same numbers as each step's own draw).
    """

    name: str = "default"
    dense_dot_general: Callable | None = None
    conv: Callable | None = None
    loop_key: Callable[[Any], Any] = _same_key
    permutation: Callable[[Any, int], jax.Array] = jax.random.permutation
    trace_runs: Callable[[Callable, int], Callable] = _same_fn
    decoding_tail: Callable[[int, int], Any] = _no_tail
    decoding_noise: Callable[..., Any] = _no_noise


DEFAULT = Backend()
"""The plain library: every hook at its textbook default (what runs on a GPU or TPU)."""

_ACTIVE: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "purejaxpo_backend", default=None)
_GLOBAL = [DEFAULT]


def active() -> Backend:
    """The backend programs are traced with now: the innermost :func:`use`, else the one
    :func:`activate` set, else :data:`DEFAULT`."""
    backend = _ACTIVE.get()
    return _GLOBAL[0] if backend is None else backend


def activate(backend: Backend) -> None:
    """Makes ``backend`` the process's backend for every program traced from now on (what
    ``purejaxpo.backends.cpu.enable()`` calls). ``activate(DEFAULT)`` switches it off."""
    if not isinstance(backend, Backend):
        raise TypeError(f"backend={backend!r} is invalid: must be a purejaxpo.backends.Backend")
    _GLOBAL[0] = backend


@contextlib.contextmanager
def use(backend: Backend):
    """Programs traced inside this block use ``backend`` (e.g. ``use(DEFAULT)`` to trace the
    plain code in a process that enabled the CPU backend)."""
    if not isinstance(backend, Backend):
        raise TypeError(f"backend={backend!r} is invalid: must be a purejaxpo.backends.Backend")
    token = _ACTIVE.set(backend)
    try:
        yield backend
    finally:
        _ACTIVE.reset(token)
