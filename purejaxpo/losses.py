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


# Preference optimisation (DPO family)
#
# Inputs are per-example sequence log-probabilities, shape ``[B]`` (any shape works: like the
# rest of this module, the losses are per element and never reduce). Reference-based losses take
# log-ratios ``chosen_logratio = log pi(y_w|x) - log pi_ref(y_w|x)`` and ``rejected_logratio``
# (each a sum over completion tokens, or whatever the caller chooses to pass); below
# ``h = chosen_logratio - rejected_logratio``. Reference-free losses (ORPO, SimPO) take
# length-normalised (average per-token) log-probabilities. Every coefficient may be traced.


def dpo_loss(
    chosen_logratio: Array,
    rejected_logratio: Array,
    beta: Numeric,
    label_smoothing: Numeric = 0.0,
) -> Array:
    """Direct Preference Optimization loss per example, with optional label smoothing (cDPO).

    ``loss = -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)`` with
    ``h = chosen_logratio - rejected_logratio`` and ``eps = label_smoothing``. With ``eps = 0``
    this is DPO; with ``eps > 0`` it is conservative DPO, which treats each label as flipped
    with probability ``eps``. The expected loss over a pair preferred with probability ``p`` is
    minimised at ``beta * h = logit(p)`` (``logit((1 - eps) p + eps (1 - p))`` for cDPO).

    Args:
      chosen_logratio: ``[B]`` ``log pi(y_w|x) - log pi_ref(y_w|x)`` of the preferred answers.
      rejected_logratio: ``[B]`` the same for the dispreferred answers.
      beta: inverse temperature of the implicit reward ``beta * logratio`` (KL strength).
      label_smoothing: ``eps`` in ``[0, 0.5)``, the assumed label-flip probability.

    Returns:
      ``[B]`` per-example loss.

    References:
      Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward
      Model", 2023; E. Mitchell, "A note on DPO with noisy preferences and relationship to IPO",
      2023 (cDPO).

    Example:
      >>> loss = dpo_loss(jnp.array([0.5]), jnp.array([-0.5]), beta=0.1)  # -log_sigmoid(0.1)
    """
    chex.assert_equal_shape((chosen_logratio, rejected_logratio))
    logits = beta * (chosen_logratio - rejected_logratio)
    return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits) - (
        label_smoothing * jax.nn.log_sigmoid(-logits)
    )


def rpo_loss(
    chosen_logratio: Array,
    rejected_logratio: Array,
    chosen_nll: Array,
    beta: Numeric,
    alpha: Numeric,
    label_smoothing: Numeric = 0.0,
) -> Array:
    """NLL-regularised DPO (RPO) per example: ``dpo_loss + alpha * chosen_nll``.

    DPO only constrains the *difference* of the two log-ratios, so it can lower the chosen
    answers' probability as long as the rejected ones fall faster; the negative log-likelihood
    of the chosen answer holds them up (continued SFT on the preferred answers).
    ``alpha = 0`` is :func:`dpo_loss`.

    Args:
      chosen_logratio: ``[B]`` ``log pi(y_w|x) - log pi_ref(y_w|x)``.
      rejected_logratio: ``[B]`` the same for the dispreferred answers.
      chosen_nll: ``[B]`` the chosen completion's negative log-likelihood per token. TRL's
        ``rpo_alpha`` term is the cross-entropy averaged over all chosen tokens of the batch:
        pass ``-log pi(y_w|x) / mean_b |y_w|`` (the batch's mean length), whose batch mean is
        exactly that; ``-log pi(y_w|x) / |y_w|`` is the per-sequence average of the paper.
      beta: DPO's inverse temperature.
      alpha: weight of the NLL term (TRL's ``rpo_alpha``; the paper uses 1).
      label_smoothing: as in :func:`dpo_loss`.

    Returns:
      ``[B]`` per-example loss.

    References:
      Pang et al., "Iterative Reasoning Preference Optimization", 2024 (DPO + NLL); TRL's
      ``DPOConfig.rpo_alpha``.

    Example:
      >>> loss = rpo_loss(jnp.array([0.5]), jnp.array([-0.5]), jnp.array([0.2]), 0.1, 1.0)
    """
    chex.assert_equal_shape((chosen_logratio, rejected_logratio, chosen_nll))
    return dpo_loss(chosen_logratio, rejected_logratio, beta, label_smoothing) + alpha * chosen_nll


def ipo_loss(chosen_logratio: Array, rejected_logratio: Array, tau: Numeric) -> Array:
    """Identity Preference Optimisation loss per example: ``(h - 1 / (2 * tau))^2``.

    Regresses the log-ratio difference ``h`` onto a finite target, so that unlike DPO it does
    not drive ``h`` to infinity on deterministic preferences. The expected loss over a pair
    preferred with probability ``p`` is minimised at ``h = (2p - 1) / (2 * tau)``.

    Note: TRL's ``loss_type="ipo"`` averages log-probabilities over completion tokens before
    forming ``h``; this function takes whatever log-ratios the caller passes (sums, as for DPO,
    or per-token averages to match TRL).

    Args:
      chosen_logratio: ``[B]`` ``log pi(y_w|x) - log pi_ref(y_w|x)``.
      rejected_logratio: ``[B]`` ``log pi(y_l|x) - log pi_ref(y_l|x)``.
      tau: regularisation strength (TRL calls it ``beta``); the target margin is ``1/(2 tau)``.

    Returns:
      ``[B]`` per-example loss.

    References:
      Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
      Preferences", 2023.
    """
    chex.assert_equal_shape((chosen_logratio, rejected_logratio))
    h = chosen_logratio - rejected_logratio
    return jnp.square(h - 1.0 / (2.0 * tau))


def hinge_loss(chosen_logratio: Array, rejected_logratio: Array, beta: Numeric) -> Array:
    """SLiC-style hinge loss on the log-ratio difference, per example: ``relu(1 - beta * h)``.

    Zero once the chosen answer leads by the margin ``beta * h >= 1``. The expected loss over a
    pair preferred with probability ``p > 1/2`` is minimised at exactly ``beta * h = 1``.

    Args:
      chosen_logratio: ``[B]`` ``log pi(y_w|x) - log pi_ref(y_w|x)``.
      rejected_logratio: ``[B]`` ``log pi(y_l|x) - log pi_ref(y_l|x)``.
      beta: scale of ``h`` (the margin in ``h`` is ``1 / beta``).

    Returns:
      ``[B]`` per-example loss.

    References:
      Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", 2023.
    """
    chex.assert_equal_shape((chosen_logratio, rejected_logratio))
    h = chosen_logratio - rejected_logratio
    return jax.nn.relu(1.0 - beta * h)


def robust_dpo_loss(
    chosen_logratio: Array,
    rejected_logratio: Array,
    beta: Numeric,
    label_smoothing: Numeric,
) -> Array:
    """Provably robust DPO loss per example, unbiased under labels flipped with prob. ``eps``.

    ``loss = ((1 - eps) * l(h) - eps * l(-h)) / (1 - 2 eps)`` with
    ``l(h) = -log_sigmoid(beta * h)``, ``eps = label_smoothing``. Its expectation over the label
    noise equals the DPO loss on the clean labels, so with observed preference probability
    ``p = (1 - 2 eps) q + eps`` the expected loss is minimised at ``beta * h = logit(q)``.
    Unlike DPO it can be negative (per example).

    Args:
      chosen_logratio: ``[B]`` ``log pi(y_w|x) - log pi_ref(y_w|x)``.
      rejected_logratio: ``[B]`` ``log pi(y_l|x) - log pi_ref(y_l|x)``.
      beta: inverse temperature, as in :func:`dpo_loss`.
      label_smoothing: ``eps`` in ``[0, 0.5)``, the label-flip rate; ``0`` gives DPO.

    Returns:
      ``[B]`` per-example loss.

    References:
      Chowdhury et al., "Provably Robust DPO: Aligning Language Models with Noisy Feedback",
      2024.
    """
    chex.assert_equal_shape((chosen_logratio, rejected_logratio))
    logits = beta * (chosen_logratio - rejected_logratio)
    return (
        -(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits)
        + label_smoothing * jax.nn.log_sigmoid(-logits)
    ) / (1.0 - 2.0 * label_smoothing)


def kto_reference_point(mismatched_logratio: Array, mask: Array | None = None) -> Array:
    """KTO's reference point ``z0 = max(0, mean(mismatched_logratio))``, gradient stopped.

    An estimate of ``KL(pi || pi_ref)`` from completions paired with prompts they were not
    written for (the caller forms them, e.g. by pairing each prompt with the completion of the
    previous example in the batch, as TRL's KTOTrainer does).

    Args:
      mismatched_logratio: ``[B]`` ``log pi(y_j|x_i) - log pi_ref(y_j|x_i)``, ``i != j``.
      mask: optional ``[B]`` bool, which entries count; an all-false mask gives ``z0 = 0``.

    Returns:
      Scalar ``z0 >= 0``, a constant to the gradient.

    References:
      Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization", 2024.
    """
    chex.assert_rank(mismatched_logratio, 1)
    z0 = jnp.maximum(masked_mean(mismatched_logratio, mask), 0.0)
    return jax.lax.stop_gradient(z0)


def kto_loss(
    logratio: Array,
    desirable: Array,
    reference_point: Numeric,
    beta: Numeric,
    desirable_weight: Numeric = 1.0,
    undesirable_weight: Numeric = 1.0,
) -> Array:
    """Kahneman-Tversky Optimisation loss on unpaired examples, per example.

    With ``r = logratio`` and ``z0 = stop_gradient(reference_point)``::

      desirable:    desirable_weight   * (1 - sigmoid(beta * (r - z0)))
      undesirable:  undesirable_weight * (1 - sigmoid(beta * (z0 - r)))

    computed as ``sigmoid(-x)`` rather than ``1 - sigmoid(x)`` (no cancellation).

    Args:
      logratio: ``[B]`` ``log pi(y|x) - log pi_ref(y|x)`` of each example's completion.
      desirable: ``[B]`` bool, true where the completion is labelled desirable.
      reference_point: scalar ``z0``, usually :func:`kto_reference_point`; gradient stopped.
      beta: inverse temperature.
      desirable_weight: ``lambda_D``, weight of desirable examples.
      undesirable_weight: ``lambda_U``, weight of undesirable examples.

    Returns:
      ``[B]`` per-example loss.

    References:
      Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization", 2024;
      TRL's ``KTOTrainer``.
    """
    chex.assert_equal_shape((logratio, desirable))
    chex.assert_rank(reference_point, 0)
    z0 = jax.lax.stop_gradient(reference_point)
    x = beta * (logratio - z0)
    return jnp.where(
        desirable,
        desirable_weight * jax.nn.sigmoid(-x),
        undesirable_weight * jax.nn.sigmoid(x),
    )


def _log_odds(avg_logp: Array) -> Array:
    """``log(p / (1 - p))`` from ``log p < 0``, with ``log(1 - p) = log(-expm1(log p))``."""
    return avg_logp - jnp.log(-jnp.expm1(avg_logp))


def orpo_loss(chosen_avg_logp: Array, rejected_avg_logp: Array, lam: Numeric) -> Array:
    """Odds-Ratio Preference Optimisation loss per example: NLL plus odds-ratio penalty.

    ``loss = -chosen_avg_logp - lam * log_sigmoid(log_odds(chosen) - log_odds(rejected))`` with
    ``log_odds(a) = a - log(1 - exp(a))`` for the average per-token log-probability ``a < 0``,
    computed as ``a - log(-expm1(a))`` (stable for ``a`` near 0 and very negative).

    The NLL term here is the length-normalised chosen log-probability, as in the ORPO paper;
    TRL's ``ORPOTrainer`` instead takes the cross-entropy averaged over all chosen tokens of the
    batch, which weights examples by length. Reference-free: no ``pi_ref``.

    Args:
      chosen_avg_logp: ``[B]`` ``(1/|y_w|) log pi(y_w|x)``, strictly negative.
      rejected_avg_logp: ``[B]`` ``(1/|y_l|) log pi(y_l|x)``, strictly negative.
      lam: weight of the odds-ratio term (``lambda`` in the paper, ``beta`` in TRL).

    Returns:
      ``[B]`` per-example loss.

    References:
      Hong et al., "ORPO: Monolithic Preference Optimization without Reference Model", 2024.
    """
    chex.assert_equal_shape((chosen_avg_logp, rejected_avg_logp))
    log_odds_ratio = _log_odds(chosen_avg_logp) - _log_odds(rejected_avg_logp)
    return -chosen_avg_logp - lam * jax.nn.log_sigmoid(log_odds_ratio)


def simpo_loss(
    chosen_avg_logp: Array, rejected_avg_logp: Array, beta: Numeric, gamma: Numeric
) -> Array:
    """SimPO loss per example: ``-log_sigmoid(beta * a_w - beta * a_l - gamma)``.

    A reference-free DPO whose implicit reward is the length-normalised log-probability
    ``beta * a``, with a target reward margin ``gamma`` (the margin itself, not TRL's
    ``gamma_beta_ratio = gamma / beta``).

    Args:
      chosen_avg_logp: ``[B]`` ``a_w = (1/|y_w|) log pi(y_w|x)``.
      rejected_avg_logp: ``[B]`` ``a_l = (1/|y_l|) log pi(y_l|x)``.
      beta: reward scale.
      gamma: target reward margin.

    Returns:
      ``[B]`` per-example loss.

    References:
      Meng et al., "SimPO: Simple Preference Optimization with a Reference-Free Reward", 2024.
    """
    chex.assert_equal_shape((chosen_avg_logp, rejected_avg_logp))
    return -jax.nn.log_sigmoid(beta * chosen_avg_logp - beta * rejected_avg_logp - gamma)


def bradley_terry_loss(chosen_reward: Array, rejected_reward: Array) -> Array:
    """Bradley-Terry reward-model loss per pair: ``-log_sigmoid(r_w - r_l)``.

    Args:
      chosen_reward: ``[B]`` reward-model scores of the preferred answers.
      rejected_reward: ``[B]`` scores of the dispreferred answers.

    Returns:
      ``[B]`` per-example loss.

    References:
      Bradley and Terry, "Rank Analysis of Incomplete Block Designs", 1952; Ouyang et al.,
      "Training language models to follow instructions with human feedback", 2022.
    """
    chex.assert_equal_shape((chosen_reward, rejected_reward))
    return -jax.nn.log_sigmoid(chosen_reward - rejected_reward)


def implicit_reward_accuracy(chosen_score: Array, rejected_score: Array) -> Array:
    """Preference accuracy per example: 1.0 where ``chosen_score > rejected_score``, else 0.0.

    Ties count as wrong (as in TRL's ``rewards/accuracies``). Pass implicit rewards
    (``beta * logratio``), average log-probs or reward-model scores alike.

    Args:
      chosen_score: ``[B]`` scores of the preferred answers.
      rejected_score: ``[B]`` scores of the dispreferred answers.

    Returns:
      ``[B]`` 0/1 floats (the inputs' float dtype, or the default float for integer inputs).
    """
    chex.assert_equal_shape((chosen_score, rejected_score))
    dtype = jnp.result_type(chosen_score, rejected_score)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return (chosen_score > rejected_score).astype(dtype)
