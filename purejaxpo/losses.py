"""Per-element policy-optimisation losses and KL estimators.

Like optax's losses, nothing here reduces: every function returns one value per element, and
the caller takes the (masked) mean with :func:`masked_mean`. That is what lets step-level PPO
(``[N]`` minibatch elements) and token-level GRPO/DPO (``[B, L]`` tokens) share one module.

Coefficients and clip ranges may be traced values (sweepable with ``jax.vmap``).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
Numeric = chex.Numeric


def masked_mean(x: Array, mask: Array | None = None, axis=None) -> Array:
    """Mean of ``x`` over ``axis`` counting only elements where ``mask`` is true.

    An all-false mask gives 0, never NaN.
    """
    if mask is None:
        return jnp.mean(x, axis=axis)
    chex.assert_equal_shape((x, mask))
    m = mask.astype(x.dtype)
    # Select rather than multiply (as masked_sum does): inf or NaN in a masked-out element
    # (padding) times 0 is NaN and would poison the mean.
    return jnp.sum(jnp.where(mask, x, 0.0), axis=axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


def masked_sum(x: Array, mask: Array | None = None, axis=None) -> Array:
    """Sum of ``x`` over ``axis`` counting only elements where ``mask`` is true."""
    if mask is None:
        return jnp.sum(x, axis=axis)
    chex.assert_equal_shape((x, mask))
    return jnp.sum(jnp.where(mask, x, 0.0), axis=axis)


def clipped_surrogate(
    ratio: Array,
    advantages: Array,
    clip_low: Numeric,
    clip_high: Numeric | None = None,
) -> Array:
    """PPO's clipped surrogate objective, as a loss to minimise (per element).

    ``loss = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)``, which for a
    negative advantage is the *max* of the two negated terms, as it must be.

    Args:
      ratio: importance ratios pi(a|s) / pi_old(a|s), any shape.
      advantages: same shape.
      clip_low: lower clip range epsilon_low (ratio is clipped below at 1 - clip_low).
      clip_high: upper clip range epsilon_high; defaults to ``clip_low``. DAPO's
        "clip-higher" sets it above ``clip_low``.

    Returns:
      Per-element loss, same shape as ``ratio``.

    References:
      Schulman et al., "Proximal Policy Optimization Algorithms", 2017; Yu et al., "DAPO", 2025.
    """
    chex.assert_equal_shape((ratio, advantages))
    if clip_high is None:
        clip_high = clip_low
    clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return -jnp.minimum(ratio * advantages, clipped * advantages)


def clip_fraction(ratio: Array, clip_low: Numeric, clip_high: Numeric | None = None) -> Array:
    """Per element, 1.0 where the ratio lies outside the clip range, else 0.0."""
    if clip_high is None:
        clip_high = clip_low
    outside = jnp.logical_or(ratio < 1.0 - clip_low, ratio > 1.0 + clip_high)
    return outside.astype(ratio.dtype)


def policy_gradient_loss(log_prob: Array, advantages: Array) -> Array:
    """The plain policy-gradient (REINFORCE) loss ``-log pi(a|s) * A`` per element."""
    chex.assert_equal_shape((log_prob, advantages))
    return -log_prob * jax.lax.stop_gradient(advantages)


def value_loss(
    values: Array,
    targets: Array,
    old_values: Array | None = None,
    clip_eps: Numeric | None = None,
) -> Array:
    """Squared-error value loss ``0.5 * (V - target)^2``, optionally clipped as in PPO.

    With ``old_values`` and ``clip_eps`` given, the prediction is also clipped to
    ``old_values +- clip_eps`` and the larger of the two squared errors is taken.

    Args:
      values: ``[...]`` current predictions.
      targets: same shape, regression targets (e.g. GAE lambda-returns).
      old_values: same shape, predictions of the network that collected the data.
      clip_eps: clip range for the value update; clipping is off when None.

    Returns:
      Per-element loss, same shape.
    """
    chex.assert_equal_shape((values, targets))
    loss = jnp.square(values - targets)
    if clip_eps is not None:
        if old_values is None:
            raise ValueError("value_loss: clip_eps needs old_values")
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        loss = jnp.maximum(loss, jnp.square(clipped - targets))
    return 0.5 * loss


def entropy_from_logits(logits: Array) -> Array:
    """Entropy of the categorical distribution given by ``logits`` over the last axis.

    ``[..., V] -> [...]``; stable for very negative logits (masked actions or tokens).
    """
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    # Double where: with a -inf logit (a masked action) log_p is -inf, and the outer where alone
    # still back-propagates 0 * (-inf) = NaN into every logit. Use log_p = 0 where p == 0.
    safe_log_p = jnp.where(p > 0, log_p, 0.0)
    return -jnp.sum(jnp.where(p > 0, p * safe_log_p, 0.0), axis=-1)


def kl_k1(log_prob: Array, ref_log_prob: Array) -> Array:
    """k1 estimate of KL(pi || pi_ref) from samples of pi: ``log pi - log pi_ref``.

    Unbiased but high-variance, and negative for some samples.
    """
    chex.assert_equal_shape((log_prob, ref_log_prob))
    return log_prob - ref_log_prob


def kl_k2(log_prob: Array, ref_log_prob: Array) -> Array:
    """k2 estimate of KL(pi || pi_ref): ``0.5 * (log pi_ref - log pi)^2`` (biased, >= 0)."""
    chex.assert_equal_shape((log_prob, ref_log_prob))
    return 0.5 * jnp.square(ref_log_prob - log_prob)


def kl_k3(log_prob: Array, ref_log_prob: Array) -> Array:
    """k3 estimate of KL(pi || pi_ref): ``exp(d) - 1 - d`` with ``d = log pi_ref - log pi``.

    Unbiased and never negative. Computed with ``expm1``: ``exp(d) - d - 1`` in float32 can
    come out negative near zero; a final ``maximum(., 0)`` guards against rounding.

    References:
      J. Schulman, "Approximating KL Divergence", 2020 (http://joschu.net/blog/kl-approx.html).
    """
    chex.assert_equal_shape((log_prob, ref_log_prob))
    d = ref_log_prob - log_prob
    return jnp.maximum(jnp.expm1(d) - d, 0.0)
