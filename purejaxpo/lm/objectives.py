"""Token-level objectives of language-model policy optimisation (GRPO family, SFT).

The per-token pieces come from :mod:`purejaxpo.losses` (clipped surrogate, k3 KL, masked
means); this module adds what is particular to sequences:

* :func:`importance_ratio`: token-level ratios (PPO/GRPO) or GSPO's sequence-level ratio;
* :func:`aggregate`: how per-token losses of a batch of completions become one scalar, the
  detail in which GRPO, BNPO/DAPO and Dr. GRPO differ;
* :func:`grpo_loss`: the whole GRPO-family loss and its metrics.

Shapes: ``[B, N]`` completions x tokens with a ``mask`` (true on completion tokens, EOS
included); advantages either ``[B]`` per sequence (GRPO, RLOO) or ``[B, N]`` per token
(REINFORCE++).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purejaxpo import losses

Array = jax.Array

RATIO_LEVELS = ("token", "sequence")
AGGREGATIONS = ("sequence_mean", "token_mean", "constant")


def importance_ratio(log_prob: Array, old_log_prob: Array, mask: Array, *,
                     level: str = "token") -> Array:
    """Per-token importance ratios ``[B, N]``.

    * ``"token"``: ``exp(log pi - log pi_old)`` per token (PPO, GRPO, DAPO).
    * ``"sequence"`` (GSPO): every token of sequence ``i`` carries the length-normalised
      sequence ratio ``s_i = exp(mean_t(log pi - log pi_old))``; its gradient flows as
      ``s_i * grad log pi_t``, so that the sequence-mean of token terms has exactly GSPO's
      gradient ``grad s_i``.

    Masked-out positions get ratio 1.

    References:
      Zheng et al., "Group Sequence Policy Optimization", 2025.
    """
    if level not in RATIO_LEVELS:
        raise ValueError(f"ratio level must be one of {RATIO_LEVELS}, got {level!r}")
    diff = jnp.where(mask, log_prob - old_log_prob, 0.0)
    if level == "token":
        return jnp.where(mask, jnp.exp(diff), 1.0)
    seq_log_ratio = losses.masked_mean(diff, mask, axis=-1)  # [B]
    # value s_i, gradient s_i * grad(log_prob) (TRL's formulation of GSPO-token).
    token_log_ratio = jax.lax.stop_gradient(seq_log_ratio)[:, None] + log_prob - \
        jax.lax.stop_gradient(log_prob)
    return jnp.where(mask, jnp.exp(token_log_ratio), 1.0)


def aggregate(per_token: Array, mask: Array, *, mode: str, normalizer: float | None = None
              ) -> Array:
    """Reduces a per-token loss ``[B, N]`` to a scalar, counting only ``mask``.

    * ``"sequence_mean"``: mean over sequences of each sequence's token mean (GRPO, GSPO):
      every completion weighs the same, so a token of a long completion weighs less.
    * ``"token_mean"``: sum over all tokens / number of tokens (BNPO, DAPO): every token
      weighs the same.
    * ``"constant"``: sum over all tokens / (sequences x ``normalizer``) with a fixed
      ``normalizer`` (default ``N``, the maximum completion length) (Dr. GRPO): no length
      bias at all.

    Sequences with no token in ``mask`` (e.g. filtered groups) count in no denominator.

    References:
      Shao et al., "DeepSeekMath", 2024 (GRPO); Yu et al., "DAPO", 2025; Liu et al.,
      "Understanding R1-Zero-Like Training: A Critical Perspective", 2025 (Dr. GRPO).
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {mode!r}")
    mask = mask.astype(bool)
    has_tokens = jnp.any(mask, axis=-1)
    num_sequences = jnp.maximum(jnp.sum(has_tokens), 1)
    if mode == "sequence_mean":
        per_sequence = losses.masked_mean(per_token, mask, axis=-1)
        return jnp.sum(jnp.where(has_tokens, per_sequence, 0.0)) / num_sequences
    if mode == "token_mean":
        return losses.masked_mean(per_token, mask)
    normalizer = per_token.shape[-1] if normalizer is None else normalizer
    return losses.masked_sum(per_token, mask) / (num_sequences * normalizer)


def token_advantages(advantages: Array, shape: tuple[int, int]) -> Array:
    """Advantages as ``[B, N]``: a per-sequence ``[B]`` broadcast over the tokens, a per-token
    ``[B, N]`` as it is; ``ValueError`` (naming ``advantages`` and both shapes) otherwise."""
    shape = tuple(shape)
    if advantages.shape == shape[:1]:
        return jnp.broadcast_to(advantages[:, None], shape)
    if advantages.shape == shape:
        return advantages
    raise ValueError(
        f"advantages of shape {tuple(advantages.shape)} is invalid: must be per sequence "
        f"{shape[:1]} or per token {shape} (the shape of the log-probs)")


def grpo_loss(
    log_prob: Array,
    old_log_prob: Array,
    advantages: Array,
    mask: Array,
    *,
    clip_low,
    clip_high,
    ref_log_prob: Array | None = None,
    beta=0.0,
    ratio_level: str = "token",
    aggregation: str = "sequence_mean",
) -> tuple[Array, dict[str, Array]]:
    """The GRPO-family loss: clipped surrogate per token plus ``beta`` times the k3 KL.

    ``loss = aggregate(-min(r_t A_t, clip(r_t, 1 - clip_low, 1 + clip_high) A_t) + beta * k3_t)``

    ``A_t`` is the token's own advantage when ``advantages`` is ``[B, N]``, its sequence's when
    it is ``[B]`` (broadcast over the tokens: the two give the same loss and gradient). With
    ``ratio_level="sequence"`` and per-token advantages this is GSPO-token (Zheng et al.,
    2025, sec. 4.3): every token's ratio has the value of the sequence ratio ``s_i`` (and is
    clipped as a whole sequence) but is multiplied by the token's own ``A_t``, so the gradient
    is ``sum_t A_t * s_i * grad log pi_t`` (times the aggregation's weights); with advantages
    constant over a sequence it is exactly GSPO.

    Args:
      log_prob: ``[B, N]`` log-probs of the completion tokens under the current policy.
      old_log_prob: ``[B, N]`` under the policy that sampled them (held fixed over epochs).
      advantages: ``[B]`` one advantage per completion (GRPO, RLOO), or ``[B, N]`` one per
        token (REINFORCE++; values at masked-out tokens are ignored).
      mask: ``[B, N]`` completion tokens (and sequences) that count.
      clip_low, clip_high: clip range; ``clip_high > clip_low`` is DAPO's clip-higher.
      ref_log_prob: ``[B, N]`` under the frozen reference model, or None for no KL term
        (then ``beta`` is ignored and no reference pass is needed).
      beta: KL coefficient (may be traced).
      ratio_level: ``"token"`` or ``"sequence"`` (GSPO); see :func:`importance_ratio`.
      aggregation: see :func:`aggregate`.

    Returns:
      ``(loss, metrics)`` with metrics ``clip_fraction`` and ``kl`` (token means).

    Raises:
      ValueError: if ``advantages`` is neither ``[B]`` nor ``[B, N]`` (before tracing).
    """
    ratio = importance_ratio(log_prob, old_log_prob, mask, level=ratio_level)
    adv = token_advantages(advantages, ratio.shape)
    per_token = losses.clipped_surrogate(ratio, adv, clip_low, clip_high)
    metrics = {"clip_fraction": losses.masked_mean(
        losses.clip_fraction(ratio, clip_low, clip_high), mask)}
    if ref_log_prob is not None:
        kl = losses.kl_k3(log_prob, ref_log_prob)
        per_token = per_token + beta * kl
        metrics["kl"] = losses.masked_mean(kl, mask)
    return aggregate(per_token, mask, mode=aggregation), metrics


def sft_loss(log_prob: Array, mask: Array) -> Array:
    """Teacher-forcing loss: mean negative log-likelihood over the target tokens ``[B, N]``."""
    return -losses.masked_mean(log_prob, mask)
