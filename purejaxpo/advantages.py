"""Advantage and return estimators.

Every function here is pure and works on time-major arrays: ``[T, B]`` means T steps of a
rollout over B environments (or sequences), or ``[B, G]`` for B prompt groups of G samples.
The exception is :func:`reinforce_pp_advantages`, which takes language-model completions as
``[B, N]`` (B sequences x N tokens, with a mask), as :mod:`purejaxpo.lm` lays them out.

Critic-free estimators for sampled sequences: :func:`group_advantages` (GRPO, Dr. GRPO) and
:func:`rloo_advantages` (leave-one-out baseline) on groups of samples of one prompt, and
:func:`reinforce_pp_advantages` (KL-shaped per-token returns, normalised over the batch).

Termination and truncation are kept apart, as gymnax 1.0 reports them:

* ``terminated[t]``: the episode really ended at step t (the next state has value 0).
* ``truncated[t]``: the episode was cut at step t by a time limit; the next state has a value,
  which must be bootstrapped from the *final* observation of that episode. ``next_values[t]``
  carries V(final observation of step t), which for every non-final step is simply V(s_{t+1}).

Hyperparameters (``gamma``, ``gae_lambda``, ``kl_coef``) may be traced values, so they can be
swept with ``jax.vmap``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
Numeric = chex.Numeric

ADVANTAGE_SCALES = ("std", "none")
"""The ``scale`` values :func:`group_advantages` accepts (GRPO's std scaling, Dr. GRPO's none)."""


def _check_time_major(*arrays: Array) -> None:
    chex.assert_rank(arrays[0], {1, 2})
    chex.assert_equal_shape(arrays)


def gae(
    rewards: Array,
    values: Array,
    next_values: Array,
    terminated: Array,
    truncated: Array,
    gamma: Numeric,
    gae_lambda: Numeric,
) -> tuple[Array, Array]:
    """Generalised advantage estimation with separate termination and truncation.

    ``delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t`` and
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` with
    ``done_t = terminated_t or truncated_t``; the last step of the rollout bootstraps from
    ``next_values[T-1]`` alone.

    Args:
      rewards: ``[T, B]`` (or ``[T]``) rewards r_t.
      values: ``[T, B]`` V(s_t).
      next_values: ``[T, B]`` V(s'_t), the value of the observation that followed step t
        *before* any automatic reset (the final observation at episode ends).
      terminated: ``[T, B]`` bool or {0, 1}, true where the episode ended for real.
      truncated: ``[T, B]`` bool or {0, 1}, true where a time limit cut the episode.
      gamma: discount factor in [0, 1].
      gae_lambda: GAE lambda in [0, 1].

    Returns:
      ``(advantages, targets)``, both ``[T, B]``; ``targets = advantages + values`` are the
      lambda-returns used to fit the value function.

    References:
      Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage
      Estimation", 2016.
    """
    _check_time_major(rewards, values, next_values, terminated, truncated)
    dtype = jnp.result_type(rewards, values, next_values)
    not_terminated = 1.0 - terminated.astype(dtype)
    not_done = 1.0 - jnp.logical_or(terminated, truncated).astype(dtype)
    deltas = rewards + gamma * not_terminated * next_values - values
    decay = gamma * gae_lambda * not_done

    def step(next_advantage, inputs):
        delta_t, decay_t = inputs
        advantage = delta_t + decay_t * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        step, jnp.zeros_like(deltas[0]), (deltas, decay), reverse=True
    )
    return advantages, advantages + values


def discounted_returns(
    rewards: Array,
    next_values: Array,
    terminated: Array,
    truncated: Array,
    gamma: Numeric,
) -> Array:
    """Discounted returns, restarting at episode boundaries.

    ``G_t = r_t + gamma * (1 - terminated_t) * B_t`` where ``B_t = next_values_t`` at a
    truncated step and at the last step of the rollout, and ``B_t = G_{t+1}`` otherwise. Pass
    ``next_values = 0`` for pure Monte-Carlo returns of complete episodes.

    Args:
      rewards: ``[T, B]`` rewards.
      next_values: ``[T, B]`` bootstrap values (see :func:`gae`).
      terminated: ``[T, B]`` true where the episode ended for real.
      truncated: ``[T, B]`` true where a time limit cut the episode.
      gamma: discount factor.

    Returns:
      ``[T, B]`` returns G_t.
    """
    _check_time_major(rewards, next_values, terminated, truncated)
    dtype = jnp.result_type(rewards, next_values)
    not_terminated = 1.0 - terminated.astype(dtype)
    truncated = truncated.astype(bool)

    def step(next_return, inputs):
        r_t, v_t, not_term_t, trunc_t = inputs
        bootstrap = jnp.where(trunc_t, v_t, next_return)
        g_t = r_t + gamma * not_term_t * bootstrap
        return g_t, g_t

    _, returns = jax.lax.scan(
        step,
        next_values[-1],  # the step after the rollout's last one
        (rewards, next_values, not_terminated, truncated),
        reverse=True,
    )
    return returns


def group_advantages(
    rewards: Array,
    *,
    scale: str = "std",
    ddof: int = 1,
    eps: float = 1e-6,
) -> Array:
    """Group-relative advantages (GRPO): each reward against its group's mean.

    ``A_ij = (r_ij - mean_j r_ij) / (std_j r_ij + eps)`` with ``scale="std"`` (GRPO), or
    ``A_ij = r_ij - mean_j r_ij`` with ``scale="none"`` (Dr. GRPO). A group whose rewards are all
    equal gets exactly zero advantage, never NaN, and so does a group of one (G = 1).

    Args:
      rewards: ``[B, G]``, B groups (prompts, or initial states) of G samples each.
      scale: ``"std"`` or ``"none"`` (keyword-only: it changes the program).
      ddof: degrees of freedom of the std (1 is the unbiased estimate used by GRPO/TRL).
      eps: added to the std before dividing.

    Returns:
      ``[B, G]`` advantages.

    References:
      Shao et al., "DeepSeekMath", 2024 (GRPO); Liu et al., "Understanding R1-Zero-Like
      Training: A Critical Perspective", 2025 (Dr. GRPO).
    """
    chex.assert_rank(rewards, 2)
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    group_size = rewards.shape[1]
    mean = jnp.mean(rewards, axis=1, keepdims=True)
    centred = rewards - mean
    # Zero spread (identical rewards, or G = 1) must give exactly zero: the mean of identical
    # floats is not always bit-identical to them, so test the spread, not the centred values.
    zero_spread = jnp.max(rewards, axis=1, keepdims=True) == jnp.min(
        rewards, axis=1, keepdims=True
    )
    if scale == "std":
        dof = max(group_size - ddof, 1)
        var = jnp.sum(jnp.square(centred), axis=1, keepdims=True) / dof
        # sqrt'(0) is inf, and inf * 0 is NaN in the backward pass even though the final where
        # discards this branch: take the sqrt of a dummy 1 for zero-spread groups instead.
        std = jnp.sqrt(jnp.where(zero_spread, jnp.ones_like(var), var))
        centred = centred / (std + eps)
    return jnp.where(zero_spread, jnp.zeros_like(centred), centred)


def normalize(x: Array, mask: Array | None = None, eps: float = 1e-8) -> Array:
    """Normalises advantages to zero mean and unit std over all (masked) elements.

    Args:
      x: any shape, e.g. ``[T, B]`` or a flattened minibatch ``[N]``.
      mask: same shape, true for the elements that count; masked-out elements come back as
        zero.
      eps: added to the std.

    Returns:
      ``x`` normalised, same shape.
    """
    if mask is None:
        mean = jnp.mean(x)
        std = jnp.std(x)
        return (x - mean) / (std + eps)
    chex.assert_equal_shape((x, mask))
    m = mask.astype(x.dtype)
    count = jnp.maximum(jnp.sum(m), 1.0)
    # Select rather than multiply by the mask: inf or NaN padding times 0 is NaN, which would
    # leak into every element through the mean.
    x_in = jnp.where(mask, x, 0.0)
    mean = jnp.sum(x_in) / count
    var = jnp.sum(jnp.where(mask, jnp.square(x_in - mean), 0.0)) / count
    return jnp.where(mask, (x - mean) / (jnp.sqrt(var) + eps), 0.0)


def rloo_advantages(rewards: Array) -> Array:
    """REINFORCE leave-one-out (RLOO) advantages: each reward against the mean of the others.

    ``A_ij = r_ij - mean_{k != j} r_ik = G / (G - 1) * (r_ij - mean_k r_ik)``: the baseline of a
    sample is the mean reward of the other ``G - 1`` samples of its group, so it does not depend
    on the sample itself and the policy gradient stays unbiased (GRPO's own-group mean and std
    do not). No scaling by the spread. A group whose rewards are all equal gets exactly zero.

    Args:
      rewards: ``[B, G]``, B groups (prompts) of G >= 2 samples each.

    Returns:
      ``[B, G]`` advantages.

    Raises:
      ValueError: if ``G < 2`` (with one sample there are no others to average), before any
        tracing.

    References:
      Kool et al., "Buy 4 REINFORCE Samples, Get a Baseline for Free!", 2019; Ahmadian et al.,
      "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
      Feedback in LLMs", 2024.
    """
    chex.assert_rank(rewards, 2)
    group_size = rewards.shape[1]
    if group_size < 2:
        raise ValueError(
            f"group_size={group_size} is invalid for RLOO advantages: each sample's baseline is "
            "the mean of the other samples of its group, so it needs >= 2")
    total = jnp.sum(rewards, axis=1, keepdims=True)
    # r_i - (sum - r_i) / (G - 1), written as one division.
    advantages = (group_size * rewards - total) / (group_size - 1)
    # As in group_advantages: identical rewards give exactly zero, whatever the rounding of
    # G * r - sum.
    zero_spread = jnp.max(rewards, axis=1, keepdims=True) == jnp.min(
        rewards, axis=1, keepdims=True
    )
    return jnp.where(zero_spread, jnp.zeros_like(advantages), advantages)


def reinforce_pp_advantages(
    rewards: Array,
    token_kl: Array,
    mask: Array,
    kl_coef: Numeric,
    *,
    gamma: Numeric = 1.0,
    eps: float = 1e-8,
) -> Array:
    """REINFORCE++ per-token advantages: KL-shaped returns, normalised over the whole batch.

    1. Per-token reward: ``r_t = -kl_coef * kl_t`` at every valid token, plus the sequence
       reward on the sequence's last valid token (padding gets no reward).
    2. Return-to-go: ``G_t = r_t + gamma * G_{t+1}`` over the tokens that count (``gamma`` per
       counted token; tokens between them, tool results, are skipped), ``G = 0`` after the
       last one.
    3. Batch normalisation: ``A_t = (G_t - mu) / (sigma + eps)`` with the mean ``mu`` and
       population std ``sigma`` of ``G`` over *all* valid tokens of the batch (not per group,
       unlike GRPO/RLOO): the baseline is global, so the estimator needs no groups.

    Padding comes back as exactly zero, and so does every token when all valid returns are
    equal (e.g. tied rewards and zero KL), rather than rounding noise divided by ``eps``. Junk
    (inf, NaN) in ``token_kl`` at padding changes nothing.

    Args:
      rewards: ``[B]`` sequence rewards.
      token_kl: ``[B, N]`` per-token KL estimates of the sampling policy to the reference, e.g.
        the k1 log-ratio ``log pi_old(y_t) - log pi_ref(y_t)``.
      mask: ``[B, N]`` bool, true on the completion tokens that count; a row with none (an
        empty or filtered completion) gets no reward and all-zero advantages.
      kl_coef: coefficient of the KL penalty in the reward (may be traced).
      gamma: discount over tokens (may be traced; 1 in the paper).
      eps: added to the std before dividing.

    Returns:
      ``[B, N]`` per-token advantages, zero at padding.

    References:
      Hu, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models",
      2025.
    """
    chex.assert_rank(rewards, 1)
    chex.assert_rank(token_kl, 2)
    chex.assert_equal_shape((token_kl, mask))
    chex.assert_equal_shape_prefix((rewards, token_kl), 1)
    mask = mask.astype(bool)
    dtype = jnp.result_type(rewards, token_kl)
    token_rewards, _ = per_token_rewards(rewards, token_kl, mask, kl_coef)
    token_rewards = token_rewards.astype(dtype)
    # Return-to-go: discounted returns over the counted tokens (time-major), never cut; tokens
    # that do not count (tool results) are skipped by the discount (counted_first).
    order, inverse = counted_first(mask)
    never = jnp.zeros(token_rewards.shape[::-1], bool)
    returns = discounted_returns(
        jnp.take_along_axis(token_rewards, order, axis=1).T,
        jnp.zeros_like(token_rewards.T), never, never, gamma
    ).T
    returns = jnp.take_along_axis(returns, inverse, axis=1)
    count = jnp.maximum(jnp.sum(mask), 1)
    mean = jnp.sum(jnp.where(mask, returns, 0.0)) / count
    centred = jnp.where(mask, returns - mean, 0.0)
    var = jnp.sum(jnp.square(centred)) / count
    big = jnp.finfo(dtype).max
    zero_spread = jnp.max(jnp.where(mask, returns, -big)) <= jnp.min(
        jnp.where(mask, returns, big)
    )  # also true for an all-padding batch
    # sqrt of a dummy 1 where the branch is discarded (sqrt'(0) = inf; see group_advantages).
    std = jnp.sqrt(jnp.where(zero_spread, jnp.ones_like(var), var))
    return jnp.where(mask & ~zero_spread, centred / (std + eps), 0.0)


def per_token_rewards(rewards: Array, token_kl: Array, mask: Array,
                      kl_coef: Numeric) -> tuple[Array, Array]:
    """InstructGPT's per-token rewards: ``-kl_coef * token_kl`` at every valid token, plus the
    sequence reward at the last valid one.

    Args:
      rewards: ``[B]`` sequence rewards.
      token_kl: ``[B, N]`` per-token KL estimates (junk at padding is ignored).
      mask: ``[B, N]`` bool, the completion tokens that count (a prefix of each row).
      kl_coef: the KL penalty's coefficient (may be traced).

    Returns:
      ``(token_rewards, is_last)``, both ``[B, N]``: zero at padding; ``is_last`` marks each
      row's last valid token (none in a row without tokens).
    """
    mask = mask.astype(bool)
    num_tokens = mask.shape[1]
    has_tokens = jnp.any(mask, axis=1)  # [B]
    last = num_tokens - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # last valid position, [B]
    is_last = (jnp.arange(num_tokens)[None, :] == last[:, None]) & has_tokens[:, None]
    token_rewards = jnp.where(mask, -kl_coef * jnp.where(mask, token_kl, 0.0), 0.0)
    return token_rewards + jnp.where(is_last, rewards[:, None], 0.0), is_last


def token_gae(rewards: Array, token_kl: Array, values: Array, mask: Array, kl_coef: Numeric,
              gamma: Numeric, gae_lambda: Numeric) -> tuple[Array, Array]:
    """Token-level GAE for a sequence policy with a critic (PPO for language models).

    The completion is an episode of ``N`` steps: the reward of token ``t`` is
    :func:`per_token_rewards` (KL penalty per token, the sequence reward on the last valid
    token, where the episode terminates), ``values[:, t]`` is the critic's ``V`` before token
    ``t``, and :func:`gae` runs over the token axis (time-major inside).

    Args:
      rewards: ``[B]`` sequence rewards.
      token_kl: ``[B, N]`` per-token KL of the sampling policy to the reference (k1).
      values: ``[B, N]`` the critic's values (junk at padding is ignored).
      mask: ``[B, N]`` bool, the completion tokens that count (the policy's actions);
        tokens between them that do not (tool results) are skipped: the next counted token's
        value bootstraps across them.
      kl_coef, gamma, gae_lambda: may be traced.

    Returns:
      ``(advantages, targets)``, ``[B, N]`` each, zero at padding; ``targets = advantages +
      values`` are the value function's regression targets.
    """
    chex.assert_rank(rewards, 1)
    chex.assert_equal_shape((token_kl, values, mask))
    mask = mask.astype(bool)
    # Tokens that do not count between ones that do (tool results) are skipped: the counted
    # tokens are moved to the front of each row in order, and the results moved back.
    order, inverse = counted_first(mask)
    token_kl, values, mask = (jnp.take_along_axis(x, order, axis=1)
                              for x in (token_kl, values, mask))
    token_rewards, is_last = per_token_rewards(rewards, token_kl, mask, kl_coef)
    values = jnp.where(mask, values, 0.0)
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    never = jnp.zeros(mask.shape[::-1], bool)
    adv, targets = gae(token_rewards.T, values.T, next_values.T, is_last.T, never, gamma,
                       gae_lambda)
    adv, targets = (jnp.take_along_axis(jnp.where(mask, x.T, 0.0), inverse, axis=1)
                    for x in (adv, targets))
    return adv, targets


def counted_first(mask: Array) -> tuple[Array, Array]:
    """``(order, inverse)`` ``[B, N]`` int: ``take_along_axis(x, order, 1)`` puts each row's
    counted tokens (``mask`` true) first, in their order, and ``inverse`` puts them back. The
    identity for a prefix mask; for a mask with holes (tool results inside a completion) the
    per-token recursions then run over the counted tokens alone."""
    order = jnp.argsort(~mask.astype(bool), axis=1, stable=True)
    return order, jnp.argsort(order, axis=1)
