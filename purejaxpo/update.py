"""The update loop shared by the RL algorithms: optimiser, shuffled minibatch epochs."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from purejaxpo import backends


def linear_schedule(learning_rate, total_steps: int, steps_per_decay: int = 1, anneal: bool = True):
    """Learning rate decaying linearly from ``learning_rate`` to 0 over ``total_steps`` decays.

    The rate drops once every ``steps_per_decay`` optimiser steps (e.g. once per update of
    ``num_epochs * num_minibatches`` gradient steps, as in PPO's reference implementations).
    ``learning_rate`` may be traced.
    """
    if not anneal:
        return lambda count: learning_rate * jnp.ones_like(count, jnp.float32)

    def schedule(count):
        frac = 1.0 - (count // steps_per_decay).astype(jnp.float32) / total_steps
        return learning_rate * frac

    return schedule


OPTIMIZERS = ("adam", "rmsprop")
"""The optimiser kinds :func:`make_optimizer` builds (a config's ``optimizer`` setting)."""


def make_optimizer(schedule, max_grad_norm, *, eps: float = 1e-5,
                   kind: str = "adam") -> optax.GradientTransformation:
    """Global-norm gradient clipping followed by Adam (or RMSProp, decay 0.99) with ``schedule``.

    ``max_grad_norm`` may be traced; so may the values ``schedule`` returns.
    """
    if kind == "adam":
        opt = optax.adam(schedule, eps=eps)
    elif kind == "rmsprop":
        opt = optax.rmsprop(schedule, decay=0.99, eps=eps)  # PyTorch / SB3 alpha
    else:
        raise ValueError(f"optimizer={kind!r} is invalid: must be one of {list(OPTIMIZERS)}")
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)


def shuffled_minibatches(key, batch, num_minibatches: int):
    """Shuffles a batch of ``[N, ...]`` leaves and splits it into ``[M, N // M, ...]``.

    The order is ``jax.random.permutation(key, N)``, or the active backend's ``permutation``
    (:mod:`purejaxpo.backends`; the CPU backend's is faster and not exactly uniform)."""
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    perm = backends.active().permutation(key, n)  # jax.random.permutation by default
    return jax.tree_util.tree_map(
        lambda x: x[perm].reshape(num_minibatches, n // num_minibatches, *x.shape[1:]), batch
    )


def gradient_step(loss_fn: Callable, tx: optax.GradientTransformation):
    """``(params, opt_state), minibatch -> ((params, opt_state), aux)`` for ``loss_fn``.

    ``loss_fn(params, minibatch) -> (loss, aux)``; ``aux`` is a dict of scalar metrics.
    """

    def step(state, minibatch):
        params, opt_state = state
        grads, aux = jax.grad(loss_fn, has_aux=True)(params, minibatch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), aux

    return step


def run_epochs(key, state, batch, step_fn: Callable, *, num_epochs: int,
               num_minibatches: int) -> tuple[Any, Any]:
    """``num_epochs`` passes of shuffled minibatches over ``batch``, all inside ``lax.scan``.

    Args:
      key: PRNG key for the shuffles.
      state: whatever ``step_fn`` carries (e.g. ``(params, opt_state)``).
      batch: pytree of ``[N, ...]`` arrays; N must divide by ``num_minibatches``.
      step_fn: ``(state, minibatch) -> (state, metrics)``.
      num_epochs, num_minibatches: static.

    Returns:
      ``(state, metrics)`` with every metric stacked ``[num_epochs, num_minibatches]``.
    """

    def epoch(state, epoch_key):
        minibatches = shuffled_minibatches(epoch_key, batch, num_minibatches)
        return jax.lax.scan(step_fn, state, minibatches)

    return jax.lax.scan(epoch, state, jax.random.split(key, num_epochs))


def explained_variance(values, targets):
    """``1 - Var(targets - values) / Var(targets)``; 0 where the targets have no variance."""
    var_t = jnp.var(targets)
    return jnp.where(var_t > 0, 1.0 - jnp.var(targets - values) / jnp.where(var_t > 0, var_t, 1.0), 0.0)


def flatten_time_batch(tree):
    """``[T, B, ...] -> [T * B, ...]`` for every leaf."""
    return jax.tree_util.tree_map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)
