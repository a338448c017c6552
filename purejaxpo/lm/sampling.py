"""Sampling completions inside ``jit`` with a KV cache, and log-probs of completions.

Shapes: ``B`` sequences, ``P`` prompt tokens (left-padded, with ``prompt_valid``), ``N`` new
tokens, ``V`` vocabulary.

A completion stops at its first EOS: the EOS itself is part of the completion (``mask`` true)
and every later position holds ``pad_id`` with ``mask`` false, so a completion is the tokens
where ``mask`` is true.

:func:`generate` is one prefill pass and one ``lax.scan`` of decoding steps, every row to the
last step. A backend may pass a ``tail`` that decodes only the unfinished rows after some steps,
and draw every step's noise before the loop (the same tokens; :mod:`purejaxpo.backends`).

Log-probs for a loss must come from the same distribution the tokens were sampled from, so
:func:`completion_log_probs` divides logits by the same ``temperature`` as :func:`generate`.
(Top-k/top-p truncation is a sampling device and is not applied to the log-probs, as in TRL.)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from purejaxpo import backends
from purejaxpo.lm.model import Transformer, TransformerConfig, init_cache
from purejaxpo.losses import entropy_from_logits

Array = jax.Array


class Completions(NamedTuple):
    """``tokens`` ``[B, N]`` int32 (``pad_id`` after EOS) and ``mask`` ``[B, N]`` bool.

    With tools (:mod:`purejaxpo.lm.tools`): ``observed`` ``[B, N]`` bool marks the tokens the
    tools wrote (results and their closing token; inside ``mask``, never actions), ``calls``
    and ``malformed`` ``[B]`` count each completion's calls and malformed calls. Without tools
    they are None.
    """

    tokens: Array
    mask: Array
    observed: Array | None = None
    calls: Array | None = None
    malformed: Array | None = None

    @property
    def actions(self) -> Array:
        """``[B, N]`` the tokens the policy chose: ``mask`` without the observations."""
        return self.mask if self.observed is None else self.mask & ~self.observed


def filter_logits(logits: Array, *, top_k: int = 0, top_p=1.0) -> Array:
    """Sets logits outside the top-k / nucleus (top-p) set to -inf.

    Args:
      logits: ``[..., V]`` (already divided by the temperature).
      top_k: keep the ``top_k`` largest (static; 0 keeps all).
      top_p: keep the smallest set of most likely tokens whose probability reaches ``top_p``
        (may be traced; 1.0 keeps all, and skips the sort). The most likely token is always
        kept.
    """
    neg_inf = jnp.finfo(logits.dtype).min
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg_inf, logits)
    if isinstance(top_p, (int, float)):
        return logits if top_p >= 1.0 else _nucleus(logits, top_p)
    # Traced (a sweepable setting): the sort runs only on steps where the nucleus is on (under
    # vmap over settings, cond becomes a select and both run).
    return jax.lax.cond(jnp.all(top_p >= 1.0), lambda x: x,
                        lambda x: _nucleus(x, top_p), logits)


def _nucleus(logits: Array, top_p) -> Array:
    """:func:`filter_logits`' top-p part: sort, cumulative mass, threshold."""
    neg_inf = jnp.finfo(logits.dtype).min
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Probability mass strictly before each sorted token; keep the token while it is < top_p.
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = before < top_p
    # The smallest kept logit is the threshold.
    threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, neg_inf, logits)


def _check_prompt_group(prompt_group: int, batch: int) -> None:
    if prompt_group < 1 or batch % prompt_group:
        raise ValueError(f"prompt_group={prompt_group} is invalid: must be >= 1 and divide the "
                         f"batch of {batch} prompts")


def _prefill(model, params, config: TransformerConfig, prompts: Array, prompt_valid: Array,
             prompt_group: int, slots: int):
    """The prompts' pass into a fresh cache of ``slots`` slots (only the slots the caller
    fills: less to copy, write and attend to than ``max_len``), once per group of
    ``prompt_group`` rows holding the same prompt, then shared by the group's rows.

    Returns ``(last_logits [B, V], cache)``: the logits after each prompt's last token (with
    left padding the last slot is always a real token, if the prompt has any) and the cache.
    """
    cache = init_cache(config, prompts.shape[0] // prompt_group, slots=slots)
    logits, cache = model.apply({"params": params}, prompts[::prompt_group],
                                prompt_valid[::prompt_group], cache=cache)
    last_logits = logits[:, -1]
    if prompt_group > 1:  # every group's rows start from its one prefilled prompt
        share = lambda x: jnp.repeat(x, prompt_group, axis=0)  # noqa: E731
        cache = cache._replace(k=tuple(map(share, cache.k)), v=tuple(map(share, cache.v)),
                               valid=share(cache.valid))
        last_logits = share(last_logits)
    return last_logits, cache


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
    tools=None,
    prompt_group: int = 1,
    tail=None,
) -> Completions:
    """Samples ``max_new_tokens`` tokens after each prompt, stopping each at its first EOS.

    The prompt is prefilled into a KV cache in one pass, then a ``lax.scan`` decodes one token
    per step. Pure and jittable; ``temperature`` and ``top_p`` may be traced. With ``tools``
    (a :class:`~purejaxpo.lm.tools.ToolUse`), a closed call's result is written into the
    sequence over the following steps (its tokens count toward ``max_new_tokens`` and are
    marked ``observed``).

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
      prompt_group: ``G`` (static): the caller promises that every run of ``G`` consecutive
        rows holds the same prompt (GRPO's group of completions per prompt, ``TaskBatch.repeat``);
        the prompt is then prefilled once per group and its cache shared, ``G`` times less
        prefill work for the same result. 1 (the default) promises nothing.
      tail: None (every row to the end), or a backend's object (static; not with ``tools``)
        that decodes the same tokens another way (the CPU backend's: only the unfinished rows
        after some steps, see :mod:`purejaxpo.backends`). It
        has ``check(batch, max_new_tokens)``, ``head_slots(P, N)``, the cache slots the
        prompt's pass fills, and ``decode(decoder, finish, carry, draws, slots, pad_id) ->
        (tokens, mask)`` (see the code below).

    Returns:
      :class:`Completions` with ``tokens`` and ``mask`` ``[B, N]`` (and with ``tools``,
      ``observed``, ``calls``, ``malformed``).
    """
    batch, prompt_len = prompts.shape
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} is invalid: must be an integer >= 1")
    if prompt_len + max_new_tokens > config.max_len:
        raise ValueError(
            f"prompt length {prompt_len} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"max_len {config.max_len}")
    _check_prompt_group(prompt_group, batch)
    if tail is not None:
        tail.check(batch, max_new_tokens)
        if tools is not None:
            raise ValueError(f"tail={tail} is invalid with tools: tool calls decode every row")
    model = Transformer(config)
    slots = prompt_len + max_new_tokens
    head_slots = slots if tail is None else tail.head_slots(prompt_len, max_new_tokens)
    last_logits, cache = _prefill(model, params, config, prompts, prompt_valid, prompt_group,
                                  head_slots)

    def scale(logits):
        return filter_logits(logits / temperature, top_k=top_k, top_p=top_p)

    hooks = backends.active()
    keys = jax.random.split(hooks.loop_key(key), max_new_tokens)
    scaled = jax.eval_shape(scale, last_logits)
    noise = None if greedy else hooks.decoding_noise(keys, scaled.shape, scaled.dtype)
    draws = keys if noise is None else noise  # what each step samples with

    def choose(logits, draw, rows=None):
        """The next tokens ``[B]`` (or of the sequences ``rows`` of the batch, for a ``tail``,
        with the batch's draw): ``jax.random.categorical(key, scaled logits)`` with the step's
        ``key``, or the same argmax of logits plus Gumbel noise drawn ahead with that key."""
        if greedy:
            return jnp.argmax(logits, axis=-1)
        if noise is None:
            if rows is None:
                return jax.random.categorical(draw, scale(logits), axis=-1)
            # The noise categorical draws for the whole batch, then these rows' part of it.
            draw = jax.random.gumbel(draw, scaled.shape, scaled.dtype)
        if rows is not None:
            draw = draw[rows]
        return jnp.argmax(draw + scale(logits), axis=-1)

    def feed(cache, token, valid):
        next_logits, cache = model.apply(
            {"params": params}, token[:, None], valid[:, None], cache=cache)
        return cache, next_logits[:, 0]

    done = jnp.zeros((batch,), bool)
    if tools is not None:
        return _decode_with_tools(tools, choose, feed, cache, last_logits, draws, eos_id,
                                  pad_id)

    def pick(logits, done, draw, rows=None):
        token = jnp.where(done, pad_id, choose(logits, draw, rows)).astype(jnp.int32)
        return token, ~done, done | (token == eos_id)

    def decoder(rows=None):
        def step(carry, draw):
            cache, logits, done = carry
            token, valid, new_done = pick(logits, done, draw, rows)
            cache, next_logits = feed(cache, token, valid)
            return (cache, next_logits, new_done), (token, valid)
        return step

    def finish(carry, draws, rows=None):
        """The tokens and mask ``[rows, len(draws)]`` decoded from ``carry``. ``len(draws)``
        tokens need one pass fewer: the last token is only chosen."""
        (_, logits, done), (tokens, mask) = jax.lax.scan(decoder(rows), carry, draws[:-1])
        token, valid, _ = pick(logits, done, draws[-1], rows)
        return _then(tokens, token), _then(mask, valid)

    carry = (cache, last_logits, done)
    if tail is None:
        tokens, mask = finish(carry, draws)
    else:
        tokens, mask = tail.decode(decoder, finish, carry, draws, slots, pad_id)
    return Completions(tokens=tokens, mask=mask)


class _ToolState(NamedTuple):
    """Per-sequence tool bookkeeping carried through decoding (``[B, ...]`` each)."""

    in_call: Array      # inside a call (after call_open, before call_close)
    call: Array         # [B, C] the call's tokens so far
    call_len: Array     # tokens in ``call`` (may exceed C: overflow)
    queue: Array        # [B, M + 1] observation tokens still to write
    queue_len: Array
    queue_pos: Array    # next queue slot to write
    calls: Array        # calls closed so far
    malformed: Array    # malformed calls so far


def _decode_with_tools(tools, choose, feed, cache, logits, draws, eos_id: int, pad_id: int):
    """The decoding scan of :func:`generate` with a tool loop (see :mod:`purejaxpo.lm.tools`):
    a queued observation token, where one is due, takes the place of the sampled token.
    ``draws``: each step's key or Gumbel noise, for ``choose``."""
    from purejaxpo.lm.tools import result_for_call

    batch = logits.shape[0]
    c, q = tools.tool.max_call_tokens, tools.queue_len
    zeros = jnp.zeros((batch,), jnp.int32)
    state = _ToolState(jnp.zeros((batch,), bool), jnp.zeros((batch, c), jnp.int32), zeros,
                       jnp.zeros((batch, q), jnp.int32), zeros, zeros, zeros, zeros)
    rows = jnp.arange(batch)

    def pick(logits, done, ts, draw):
        forced = ts.queue_pos < ts.queue_len
        queued = ts.queue[rows, jnp.minimum(ts.queue_pos, q - 1)]
        token = jnp.where(forced, queued, choose(logits, draw))
        token = jnp.where(done, pad_id, token).astype(jnp.int32)
        valid = ~done
        acting = valid & ~forced
        opens = acting & ~ts.in_call & (token == tools.call_open)
        closes = acting & ts.in_call & (token == tools.call_close)
        grows = acting & ts.in_call & ~closes
        call = jnp.where((grows & (ts.call_len < c))[:, None]
                         & (jnp.arange(c)[None, :] == ts.call_len[:, None]),
                         token[:, None], ts.call)
        call_len = jnp.where(grows, ts.call_len + 1, jnp.where(opens, 0, ts.call_len))
        call = jnp.where(opens[:, None], 0, call)

        def run_tool(_):
            return jax.vmap(lambda cl, n, calls: result_for_call(
                tools, cl, jnp.minimum(n, c), n > c, calls))(call, call_len, ts.calls)

        empty = (jnp.zeros((batch, q), jnp.int32), zeros, jnp.zeros((batch,), bool))
        queue, qlen, bad = jax.lax.cond(jnp.any(closes), run_tool, lambda _: empty, None)
        ts = _ToolState(
            in_call=(ts.in_call | opens) & ~closes,
            call=call, call_len=call_len,
            queue=jnp.where(closes[:, None], queue, ts.queue),
            queue_len=jnp.where(closes, qlen, ts.queue_len),
            queue_pos=jnp.where(closes, 0, ts.queue_pos + (forced & valid)),
            calls=ts.calls + closes, malformed=ts.malformed + (closes & bad))
        new_done = done | (acting & (token == eos_id))
        return (token, valid, forced & valid), new_done, ts

    def step(carry, draw):
        cache, logits, done, ts = carry
        out, done, ts = pick(logits, done, ts, draw)
        cache, next_logits = feed(cache, out[0], out[1])
        return (cache, next_logits, done, ts), out

    done = jnp.zeros((batch,), bool)
    (_, logits, done, ts), outs = jax.lax.scan(step, (cache, logits, done, state), draws[:-1])
    last, _, ts = pick(logits, done, ts, draws[-1])  # as in generate: no pass after the last
    tokens, mask, observed = (_then(x, y) for x, y in zip(outs, last))
    return Completions(tokens=tokens, mask=mask, observed=observed, calls=ts.calls,
                       malformed=ts.malformed)


def _then(steps: Array, last: Array) -> Array:
    """``[N - 1, B]`` scanned steps and the last step's ``[B]`` as ``[B, N]``."""
    return jnp.concatenate([steps, last[None]]).T


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
    completion_valid: Array | None = None,
    prompt_group: int = 1,
):
    """Per-token log-probs (and optionally entropies) of completions given their prompts.

    One teacher-forced pass over ``[prompt, completion]``; with ``prompt_group=G`` the prompts
    go through the model once per group (as in :func:`generate`) and the completions attend
    to their group's prompt, the same log-probs (up to float rounding) and gradients for
    ``G`` times less prompt work.

    Args:
      params, config: the policy.
      prompts, prompt_valid: ``[B, P]``.
      completions, completion_mask: ``[B, N]``; log-probs are kept where the mask is true.
      temperature: logits are divided by it (the sampling temperature).
      with_entropy: also return the entropy of each next-token distribution (static).
      completion_valid: ``[B, N]``, the completion tokens the model attends to, when more
        than ``completion_mask`` (tool results: read, never scored); default the mask.
      prompt_group: ``G`` (static): the caller promises that every run of ``G`` consecutive
        rows holds the same prompt (as :func:`generate`'s); 1 (the default) promises nothing.

    Returns:
      ``log_probs`` ``[B, N]`` (0 where the mask is false), or ``(log_probs, entropy)``.
    """
    completion_valid = completion_mask if completion_valid is None else completion_valid
    model = Transformer(config)
    if prompt_group == 1:
        tokens = jnp.concatenate([prompts, completions], axis=1)
        valid = jnp.concatenate([prompt_valid, completion_valid], axis=1)
        logits, _ = model.apply({"params": params}, tokens, valid)
        logits = logits[:, prompts.shape[1] - 1:-1]
    else:
        _check_prompt_group(prompt_group, prompts.shape[0])
        last_logits, cache = _prefill(model, params, config, prompts, prompt_valid,
                                      prompt_group, prompts.shape[1] + completions.shape[1])
        # The completions in one cached pass: they attend to the shared prompt and causally
        # to each other. The last completion token predicts nothing that is scored.
        logits = last_logits[:, None]
        if completions.shape[1] > 1:
            rest, _ = model.apply({"params": params}, completions[:, :-1],
                                  completion_valid[:, :-1], cache=cache)
            logits = jnp.concatenate([logits, rest], axis=1)
    return log_probs_from_logits(logits, completions, completion_mask, temperature,
                                 with_entropy=with_entropy)


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
