"""Threefry-2x32 keys whose hash XLA fuses: the same random numbers, fewer kernels on a CPU.

jax lowers its Threefry-2x32 hash on the CPU as a rolled loop of five trips (to keep compile
times down): every ``jax.random.split``, ``uniform`` or ``categorical`` inside a compiled loop
costs a ``while`` of about 80 tiny kernels. A rollout step of PPO on CartPole draws five times
(its key split, the action sample, the vectorised env's key split, each env's split and reset),
so most of the kernels a CPU runs per env step belong to the hash, not to the policy or the env.

:data:`FAST_THREEFRY` is the same hash written as plain ``uint32`` arithmetic, which XLA fuses
into one kernel, registered as a jax PRNG implementation (``jax.extend.random``). Keys of this
implementation give *bit for bit* the numbers of jax's default ``threefry2x32`` keys with the
same key data (jax's default stream, ``jax_threefry_partitionable=True``; with it off,
:func:`fast_key` leaves keys as they are; tested in ``tests/test_backends_threefry.py``), so switching a
loop to them changes no result, only its speed.

Usage: :func:`fast_key` wraps a raw ``uint32[..., 2]`` key (``jax.random.PRNGKey``) or a typed
threefry key; :func:`raw_key` unwraps a key back to the raw form (to store it in a carry that
holds raw keys). Every ``jax.random`` function takes the wrapped keys.

This is a CPU speed-up: on accelerators jax's own lowering is already unrolled (or a native
kernel), so there the module changes the key type and little else.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import random as jax_random

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x, d: int):
    return lax.shift_left(x, np.uint32(d)) | lax.shift_right_logical(x, np.uint32(32 - d))


def threefry2x32(k1, k2, x1, x2):
    """The Threefry-2x32 block cipher (20 rounds), unrolled: ``(y1, y2)`` for counters
    ``(x1, x2)`` under key ``(k1, k2)``; all ``uint32``, keys broadcast against counters."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x = [x1 + ks[0], x2 + ks[1]]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x[0] = x[0] + x[1]
            x[1] = _rotl(x[1], r) ^ x[0]
        x[0] = x[0] + ks[(i + 1) % 3]
        x[1] = x[1] + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x[0], x[1]


def _hash(key, count):
    """jax's ``threefry_2x32(key, count)``: the count array hashed in two halves."""
    flat = count.ravel()
    n = flat.shape[0]
    if n % 2:
        flat = jnp.concatenate([flat, jnp.zeros((1,), jnp.uint32)])
    half = flat.shape[0] // 2
    y1, y2 = threefry2x32(key[0], key[1], flat[:half], flat[half:])
    return jnp.concatenate([y1, y2])[:n].reshape(count.shape)


def _counters(shape):
    """The 64-bit iota over ``shape`` as ``(high, low)`` uint32 words (jax's
    ``iota_2x32_shape``); arrays here stay below 2**32 elements, so the high words are 0."""
    size = int(np.prod(shape, dtype=np.int64))
    if size >= 2 ** 32:
        raise ValueError(f"purejaxpo.backends.threefry: at most 2**32 - 1 random words per call, got {size}")
    low = lax.iota(np.uint32, size).reshape(shape)
    return jnp.zeros(shape, jnp.uint32), low


def _seed(seed):
    """jax's ``threefry_seed``: ``[high, low]`` 32-bit words of an integer seed."""
    seed = jnp.asarray(seed)
    low = lax.convert_element_type(seed, np.uint32)  # the low 32 bits (wraps negatives)
    if seed.dtype.itemsize == 8:
        high = lax.convert_element_type(
            lax.shift_right_logical(seed, jnp.asarray(32, seed.dtype)), np.uint32)
    else:
        high = jnp.zeros((), jnp.uint32)
    return jnp.stack([high, low])


def _hash_counters(key, shape):
    """Both output words of the hash of every counter of ``shape`` (jax's partitionable
    stream, shared by ``split`` and ``random_bits``)."""
    high, low = _counters(tuple(shape))
    return threefry2x32(key[0], key[1], high, low)


def _split(key, shape):
    y1, y2 = _hash_counters(key, shape)
    return jnp.stack([y1, y2], axis=y1.ndim)


def _fold_in(key, data):
    return _hash(key, _seed(jnp.asarray(data, jnp.uint32)))


def _random_bits(key, bit_width, shape):
    y1, y2 = _hash_counters(key, shape)
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[bit_width]
    if bit_width == 64:
        return (lax.shift_left(lax.convert_element_type(y1, dtype), jnp.asarray(32, dtype))
                | lax.convert_element_type(y2, dtype))
    bits = y1 ^ y2
    return bits if bit_width == 32 else lax.convert_element_type(bits, dtype)


FAST_THREEFRY = jax_random.define_prng_impl(
    key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits, fold_in=_fold_in,
    name="purejaxpo_threefry2x32", tag="pjf",
)
"""Threefry-2x32 with a fusible hash: the numbers of jax's ``threefry2x32`` keys."""


def fast_key(key):
    """``key`` as a :data:`FAST_THREEFRY` key array: a raw ``uint32[..., 2]`` key or a typed
    key of jax's ``threefry2x32`` (or already fast); the same key data, so the same numbers.

    With ``jax_threefry_partitionable`` switched off (jax's older stream), ``key`` comes back
    unchanged: this module reproduces only the default stream."""
    if not jax.config.jax_threefry_partitionable:
        return key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if jax.random.key_impl(key) == FAST_THREEFRY:
            return key
        key = jax.random.key_data(key)
    if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
        raise ValueError(f"purejaxpo.backends.threefry.fast_key: a threefry key (uint32[..., 2]) is needed, "
                         f"got {key.dtype}{list(key.shape)}")
    return jax.random.wrap_key_data(key, impl=FAST_THREEFRY)


def raw_key(key):
    """The raw ``uint32[..., 2]`` data of a key (typed or already raw)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def like(key, reference):
    """``key`` (any threefry key) in the form of ``reference``: raw ``uint32[..., 2]`` data if
    ``reference`` is raw, else a typed key of ``reference``'s implementation; for storing a key
    drawn with :func:`fast_key` back into a carry that holds ``reference``."""
    data = raw_key(key)
    if jnp.issubdtype(reference.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(reference))
    return data
