"""Trust-region machinery (TRPO): Fisher-vector products, conjugate gradient, line search.

Three small pure functions, each safe under ``jax.jit`` and ``jax.vmap`` (fixed shapes, no
Python control flow on traced values), so a TRPO run stays one ``train(key)`` that can be
vmapped over seeds and over ``max_kl``, ``damping`` or ``backtrack_coef``:

* :func:`fisher_vector_product`: ``F v`` as the Hessian-vector product of the mean KL, by
  forward-over-reverse differentiation; the ``[P, P]`` matrix is never formed.
* :func:`conjugate_gradient`: solves ``F x = g`` for the natural-gradient direction with a fixed
  budget of matrix-vector products.
* :func:`backtracking_line_search`: shrinks the step until the KL constraint holds and the
  surrogate improves, or keeps the parameters.

Parameters are any pytree (e.g. flax's ``{"params": ...}`` dict); P below is the total number
of scalars in it.

References:
  Schulman et al., "Trust Region Policy Optimization", 2015 (appendix C: the Fisher-vector
  product, conjugate gradient and line search); Martens, "Deep learning via Hessian-free
  optimization", 2010 (Hessian-vector products by automatic differentiation).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
Numeric = chex.Numeric
PyTree = Any


def _vdot(a: PyTree, b: PyTree) -> Array:
    """Sum over all leaves of the elementwise product: the dot product of two pytrees."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                jax.tree_util.tree_leaves(b)))


def _axpy(alpha: Numeric, x: PyTree, y: PyTree) -> PyTree:
    """``alpha * x + y`` leaf by leaf."""
    return jax.tree_util.tree_map(lambda xi, yi: alpha * xi + yi, x, y)


def fisher_vector_product(kl_fn: Callable[[PyTree], Array], params: PyTree, v: PyTree,
                          damping: Numeric) -> PyTree:
    """``(F + damping * I) v`` with F the Hessian of the mean KL at ``params``.

    ``kl_fn(params)`` must return the scalar mean, over a batch of states ``[N]``, of
    ``KL(pi_old(.|s) || pi_params(.|s))`` with the old policy held fixed (a constant, or behind
    ``jax.lax.stop_gradient``). At ``params = old params`` the KL is 0, its gradient is 0, and
    its Hessian is the Fisher information matrix of the policy averaged over the states, so
    this is the Fisher-vector product TRPO needs. It is computed as the directional derivative
    of ``grad(kl_fn)`` along ``v`` (``jax.jvp`` of ``jax.grad``: forward over reverse), at the
    cost of about two gradient evaluations; the ``[P, P]`` matrix is never formed.

    Args:
      kl_fn: ``params -> []`` mean KL from the fixed old policy to the policy at ``params``.
      params: pytree at which to take the Hessian (the old policy's parameters).
      v: pytree of the same structure and shapes as ``params`` (P scalars in all).
      damping: added multiple of ``v`` (Tikhonov damping, keeps CG well conditioned); may be
        traced.

    Returns:
      pytree like ``params``: ``F v + damping * v``.
    """
    chex.assert_trees_all_equal_shapes(params, v)
    _, hvp = jax.jvp(jax.grad(kl_fn), (params,), (v,))
    return _axpy(damping, v, hvp)


def conjugate_gradient(matvec: Callable[[PyTree], PyTree], b: PyTree, num_iters: int,
                       residual_tol: Numeric = 1e-10) -> PyTree:
    """Approximately solves ``A x = b`` for symmetric positive-definite ``A`` given as ``matvec``.

    Starts from ``x = 0`` and runs at most ``num_iters`` conjugate-gradient iterations, stopping
    early once the squared residual norm ``|b - A x|^2`` is below ``residual_tol``. The loop is
    a ``lax.while_loop`` with a static bound, so it compiles once; under ``vmap`` it runs until
    every batch element has stopped, and elements that stopped earlier keep their solution
    (their step sizes are masked to zero, never NaN).

    Args:
      matvec: ``x -> A x``, pytree to pytree of the same structure (e.g. a Fisher-vector
        product).
      b: pytree, the right-hand side (e.g. the policy gradient, P scalars in all).
      num_iters: maximum number of iterations, i.e. of ``matvec`` calls (static).
      residual_tol: stop when the squared residual norm falls below this; may be traced.

    Returns:
      ``x``, pytree like ``b``.

    References:
      Nocedal and Wright, "Numerical Optimization", algorithm 5.2; Schulman et al. 2015,
      appendix C.
    """
    x0 = jax.tree_util.tree_map(jnp.zeros_like, b)
    rr0 = _vdot(b, b)

    def cond(state):
        i, _, _, _, rr = state
        return jnp.logical_and(i < num_iters, rr >= residual_tol)

    def body(state):
        i, x, r, p, rr = state
        ap = matvec(p)
        p_ap = _vdot(p, ap)
        # Guard the divisions: a zero direction or residual (already converged, or b = 0) gives
        # a zero step instead of 0 / 0.
        alpha = jnp.where(p_ap > 0, rr / jnp.where(p_ap > 0, p_ap, 1.0), 0.0)
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, ap, r)
        rr_new = _vdot(r, r)
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
        p = _axpy(beta, p, r)
        return i + 1, x, r, p, rr_new

    _, x, _, _, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), x0, b, b, rr0))
    return x


class LineSearchInfo(NamedTuple):
    """What :func:`backtracking_line_search` found (all scalars).

    Attributes:
      step_fraction: the fraction of ``full_step`` taken; 0 when no fraction was accepted.
      accepted: whether some fraction was accepted (float 0/1, so it averages into a rate).
      kl: KL at the returned parameters (0 when rejected).
      improvement: surrogate gain ``objective(new) - objective(params)`` (0 when rejected).
      expected_improvement: first-order prediction of that gain for the fraction taken.
    """

    step_fraction: Array
    accepted: Array
    kl: Array
    improvement: Array
    expected_improvement: Array


def backtracking_line_search(
    objective_fn: Callable[[PyTree], Array],
    kl_fn: Callable[[PyTree], Array],
    params: PyTree,
    full_step: PyTree,
    expected_improve: Numeric,
    max_kl: Numeric,
    backtrack_coef: Numeric,
    num_backtracks: int,
    *,
    accept_ratio: Numeric = 0.0,
) -> tuple[PyTree, LineSearchInfo]:
    """Takes the largest fraction ``backtrack_coef ** k`` of ``full_step`` that is acceptable.

    The candidates are ``params + backtrack_coef ** k * full_step`` for
    ``k = 0 .. num_backtracks - 1``. A candidate is acceptable when its KL is at most
    ``max_kl``, its surrogate improves on the current one (``improvement > 0``, and
    ``improvement > accept_ratio * expected_improve * fraction``, which with the default
    ``accept_ratio = 0`` adds nothing) and both are finite. The largest acceptable fraction
    wins; if none is acceptable the parameters come back unchanged. The fractions are tried in
    a ``lax.while_loop`` that stops at the first acceptable one (usually the first or second),
    so a step costs one or two evaluations of the objective and of the KL, at most
    ``num_backtracks``. The loop's bound is static, so the function compiles once; under
    ``vmap`` it runs until every batch element has accepted or run out of fractions, and each
    element keeps its own first acceptable fraction.

    Args:
      objective_fn: ``params -> []`` surrogate objective to *maximise* (e.g. the mean
        importance-weighted advantage over a batch ``[N]``).
      kl_fn: ``params -> []`` mean KL from the old (fixed) policy to the policy at ``params``.
      params: pytree, the current (old) parameters.
      full_step: pytree like ``params``, the proposed step (e.g. the scaled natural gradient).
      expected_improve: first-order gain predicted for the full step, ``g . full_step``.
      max_kl: trust-region radius delta; may be traced.
      backtrack_coef: shrink factor in (0, 1); may be traced.
      num_backtracks: number of fractions tried (static).
      accept_ratio: minimum share of the first-order prediction the gain must reach (the
        Armijo-style test of some implementations); 0 accepts any gain. May be traced.

    Returns:
      ``(new_params, info)``: ``new_params`` like ``params``; ``info`` a :class:`LineSearchInfo`.
    """
    chex.assert_trees_all_equal_shapes(params, full_step)
    base = objective_fn(params)
    zero = jnp.zeros((), jnp.result_type(base))

    def cond(state):
        k, accepted, *_ = state
        return jnp.logical_and(k < num_backtracks, jnp.logical_not(accepted))

    def body(state):
        k, _, _, _, _ = state
        fraction = backtrack_coef ** k.astype(zero.dtype)
        candidate = _axpy(fraction, full_step, params)
        improvement = objective_fn(candidate) - base
        kl = kl_fn(candidate)
        ok = (
            (kl <= max_kl)
            & (improvement > 0)
            & (improvement > accept_ratio * expected_improve * fraction)
            & jnp.isfinite(kl)
            & jnp.isfinite(improvement)
        )
        return k + 1, ok, fraction, improvement, kl

    init = (jnp.zeros((), jnp.int32), jnp.zeros((), bool), zero, zero, zero)
    _, accepted, fraction, improvement, kl = jax.lax.while_loop(cond, body, init)
    fraction = jnp.where(accepted, fraction, 0.0)
    new_params = _axpy(fraction, full_step, params)
    info = LineSearchInfo(
        step_fraction=fraction,
        accepted=accepted.astype(zero.dtype),
        kl=jnp.where(accepted, kl, 0.0),
        improvement=jnp.where(accepted, improvement, 0.0),
        expected_improvement=jnp.where(accepted, expected_improve * fraction, 0.0),
    )
    return new_params, info


def natural_gradient_step(grad: PyTree, direction: PyTree, fvp_direction: PyTree,
                          max_kl: Numeric) -> tuple[PyTree, Array]:
    """Scales a natural-gradient direction to the edge of the trust region.

    With ``x`` approximately ``F^-1 g`` (from :func:`conjugate_gradient`), the step
    ``s = sqrt(2 delta / x^T F x) * x`` has quadratic-model KL ``0.5 s^T F s = delta``.

    Args:
      grad: pytree, the surrogate's gradient g (P scalars).
      direction: pytree like ``grad``, x.
      fvp_direction: pytree like ``grad``, ``F x`` (damped, as CG saw it).
      max_kl: delta; may be traced.

    Returns:
      ``(full_step, expected_improve)``: the step s, and ``g . s``, the gain the linear model
      predicts for it. A degenerate direction (``x^T F x <= 0``, e.g. a zero gradient) gives a
      zero step.
    """
    shs = _vdot(direction, fvp_direction)
    scale = jnp.where(shs > 0, jnp.sqrt(2.0 * max_kl / jnp.where(shs > 0, shs, 1.0)), 0.0)
    full_step = jax.tree_util.tree_map(lambda x: scale * x, direction)
    return full_step, _vdot(grad, full_step)
