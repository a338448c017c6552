"""Sampling completions inside ``jit`` with a KV cache, and log-probs of completions.

Shapes: ``B`` sequences, ``P`` prompt tokens (left-padded, with ``prompt_valid``), ``N`` new
tokens, ``V`` vocabulary.

A completion stops at its first EOS: the EOS itself is part of the completion (``mask`` true)
and every later position holds ``pad_id`` with ``mask`` false, so a completion is the tokens
where ``mask`` is true.

Log-probs for a loss must come from the same distribution the tokens were sampled from, so
:func:`completion_log_probs` divides logits by the same ``temperature`` as :func:`generate`.
(Top-k/top-p truncation is a sampling device and is not applied to the log-probs, as in TRL.)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from purejaxpo.lm.model import Transformer, TransformerConfig, init_cache
from purejaxpo.losses import entropy_from_logits

Array = jax.Array


class Completions(NamedTuple):
    """``tokens`` ``[B, N]`` int32 (``pad_id`` after EOS) and ``mask`` ``[B, N]`` bool."""

    tokens: Array
    mask: Array


def filter_logits(logits: Array, *, top_k: int = 0, top_p=1.0) -> Array:
    """Sets logits outside the top-k / nucleus (top-p) set to -inf.

    Args:
      logits: ``[..., V]`` (already divided by the temperature).
      top_k: keep the ``top_k`` largest (static; 0 keeps all).
      top_p: keep the smallest set of most likely tokens whose probability reaches ``top_p``
        (may be traced; 1.0 keeps all). The most likely token is always kept.
    """
    neg_inf = jnp.finfo(logits.dtype).min
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg_inf, logits)
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Probability mass strictly before each sorted token; keep the token while it is < top_p.
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = before < top_p
    # The smallest kept logit is the threshold.
    threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, neg_inf, logits)


def generate(
    key: Array,
    params,
    config: TransformerConfig,
    prompts: Array,
    prompt_valid: Array,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature=1.0,
    top_k: int = 0,
    top_p=1.0,
    greedy: bool = False,
) -> Completions:
    """Samples ``max_new_tokens`` tokens after each prompt, stopping each at its first EOS.

    The prompt is prefilled into a KV cache in one pass, then a ``lax.scan`` decodes one token
    per step. Pure and jittable; ``temperature`` and ``top_p`` may be traced.

    Args:
      key: PRNG key.
      params: :class:`~purejaxpo.lm.model.Transformer` parameters.
      config: its architecture; ``P + max_new_tokens`` must fit in ``config.max_len``.
      prompts: ``[B, P]`` int32 prompt tokens, left-padded.
      prompt_valid: ``[B, P]`` bool, false on padding.
      max_new_tokens: ``N`` (static).
      eos_id, pad_id: token ids (static).
      temperature: logits are divided by it before sampling.
      top_k, top_p: see :func:`filter_logits`.
      greedy: take the most likely token at every step (static; ignores the sampling settings).

    Returns:
      :class:`Completions` with ``tokens`` and ``mask`` ``[B, N]``.
    """
    batch, prompt_len = prompts.shape
    if prompt_len + max_new_tokens > config.max_len:
        raise ValueError(
            f"prompt length {prompt_len} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"max_len {config.max_len}")
    model = Transformer(config)
    cache = init_cache(config, batch)
    logits, cache = model.apply({"params": params}, prompts, prompt_valid, cache=cache)
    # With left padding the last prompt slot is always a real token (if the prompt has any).
    last_logits = logits[:, -1]

    def step(carry, step_key):
        cache, logits, done = carry
        if greedy:
            token = jnp.argmax(logits, axis=-1)
        else:
            scaled = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
            token = jax.random.categorical(step_key, scaled, axis=-1)
        token = jnp.where(done, pad_id, token).astype(jnp.int32)
        valid = ~done
        new_done = done | (token == eos_id)
        next_logits, cache = model.apply(
            {"params": params}, token[:, None], valid[:, None], cache=cache)
        return (cache, next_logits[:, 0], new_done), (token, valid)

    keys = jax.random.split(key, max_new_tokens)
    done = jnp.zeros((batch,), bool)
    _, (tokens, mask) = jax.lax.scan(step, (cache, last_logits, done), keys)
    return Completions(tokens=tokens.T, mask=mask.T)


def completion_log_probs(
    params,
    config: TransformerConfig,
    prompts: Array,
    prompt_valid: Array,
    completions: Array,
    completion_mask: Array,
    temperature=1.0,
    *,
    with_entropy: bool = False,
):
    """Per-token log-probs (and optionally entropies) of completions given their prompts.

    One teacher-forced pass over ``[prompt, completion]``.

    Args:
      params, config: the policy.
      prompts, prompt_valid: ``[B, P]``.
      completions, completion_mask: ``[B, N]``.
      temperature: logits are divided by it (the sampling temperature).
      with_entropy: also return the entropy of each next-token distribution (static).

    Returns:
      ``log_probs`` ``[B, N]`` (0 where the mask is false), or ``(log_probs, entropy)``.
    """
    tokens = jnp.concatenate([prompts, completions], axis=1)
    valid = jnp.concatenate([prompt_valid, completion_mask], axis=1)
    logits, _ = Transformer(config).apply({"params": params}, tokens, valid)
    return log_probs_from_logits(logits[:, prompts.shape[1] - 1:-1], completions,
                                 completion_mask, temperature, with_entropy=with_entropy)


def log_probs_from_logits(logits: Array, completions: Array, completion_mask: Array,
                          temperature=1.0, *, with_entropy: bool = False):
    """:func:`completion_log_probs` from the logits ``[B, N, V]`` that predict the completion
    tokens (a pass's logits at the prompt's last position onwards, the last one dropped)."""
    logits = logits / temperature
    log_softmax = jax.nn.log_softmax(logits, axis=-1)
    log_probs = jnp.take_along_axis(log_softmax, completions[..., None], axis=-1)[..., 0]
    log_probs = jnp.where(completion_mask, log_probs, 0.0)
    if not with_entropy:
        return log_probs
    return log_probs, entropy_from_logits(logits)
