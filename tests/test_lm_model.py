"""The transformer policy, KV-cached sampling and completion log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.lm.model import (
    Transformer,
    TransformerConfig,
    count_params,
    init_cache,
    init_params,
)
from purejaxpo.lm.sampling import completion_log_probs, filter_logits, generate

V = 11
EOS, PAD = 2, 0


def _model(positions="rope", layers=2):
    cfg = TransformerConfig(vocab_size=V, num_layers=layers, width=32, num_heads=4,
                            max_len=16, positions=positions)
    # Larger weights than the default init, so the distributions are far from uniform.
    params = init_params(jax.random.PRNGKey(0), cfg)
    params = jax.tree_util.tree_map(lambda x: x * 8.0 if x.ndim == 2 else x, params)
    return cfg, params


def _left_padded_prompts():
    prompts = jnp.array([[3, 4, 5, 6, 7], [0, 0, 8, 9, 3], [0, 5, 5, 6, 4]], jnp.int32)
    valid = jnp.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]], bool)
    return prompts, valid


@pytest.mark.parametrize("slots", [None, 8])
@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_cached_decoding_matches_full_forward(positions, slots):
    """Prefill + one-token steps through the cache give the same logits as one full pass,
    with a cache of ``max_len`` slots or of just the tokens fed (5 + 3)."""
    cfg, params = _model(positions)
    model = Transformer(cfg)
    prompts, valid = _left_padded_prompts()
    extra = jnp.array([[3, 9, 2], [4, 4, 6], [7, 2, 0]], jnp.int32)
    extra_valid = jnp.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], bool)
    tokens = jnp.concatenate([prompts, extra], 1)
    all_valid = jnp.concatenate([valid, extra_valid], 1)
    full, _ = model.apply({"params": params}, tokens, all_valid)

    cache = init_cache(cfg, 3, slots=slots)
    assert cache.k[0].shape[2] == cache.valid.shape[1] == (slots or cfg.max_len)
    logits, cache = model.apply({"params": params}, prompts, valid, cache=cache)
    stepped = [logits]
    for t in range(3):
        logits, cache = model.apply({"params": params}, extra[:, t:t + 1],
                                    extra_valid[:, t:t + 1], cache=cache)
        stepped.append(logits)
    stepped = jnp.concatenate(stepped, 1)
    np.testing.assert_allclose(np.where(all_valid[..., None], stepped, 0),
                               np.where(all_valid[..., None], full, 0), atol=2e-4, rtol=2e-4)


def test_cache_slots_outside_the_context_are_refused():
    cfg, _ = _model()
    for slots in (0, cfg.max_len + 1):
        with pytest.raises(ValueError, match=f"slots={slots} is invalid"):
            init_cache(cfg, 2, slots=slots)


def test_left_padding_does_not_change_logits():
    """A prompt's logits do not depend on how much padding precedes it."""
    cfg, params = _model()
    model = Transformer(cfg)
    short, _ = model.apply({"params": params}, jnp.array([[8, 9, 3]]), jnp.ones((1, 3), bool))
    padded, _ = model.apply({"params": params}, jnp.array([[0, 0, 8, 9, 3]]),
                            jnp.array([[0, 0, 1, 1, 1]], bool))
    np.testing.assert_allclose(padded[:, 2:], short, atol=1e-4, rtol=1e-4)


def test_config_validation_and_round_trip():
    cfg = TransformerConfig(vocab_size=15, positions="learned")
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="width must be divisible by num_heads"):
        TransformerConfig(vocab_size=15, width=30, num_heads=4)
    with pytest.raises(ValueError, match="positions"):
        TransformerConfig(vocab_size=15, positions="alibi")
    with pytest.raises(ValueError, match="num_layers"):
        TransformerConfig(vocab_size=15, num_layers=0)
    with pytest.raises(ValueError, match="unknown TransformerConfig fields"):
        TransformerConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})


def test_param_count_of_the_benchmark_model():
    """4 layers, width 128, 15 tokens, 32 positions: the 0.8M-parameter model of the TRL
    comparison (GPT-2 with the same sizes also has about 0.8M)."""
    cfg = TransformerConfig(vocab_size=15, num_layers=4, width=128, num_heads=4, max_len=32)
    n = count_params(init_params(jax.random.PRNGKey(0), cfg))
    assert 0.75e6 < n < 0.85e6


def _np_full_logits(cfg, params, tokens, valid):
    logits, _ = Transformer(cfg).apply({"params": params}, tokens, valid)
    return np.asarray(logits, np.float64)


@pytest.mark.slow
def test_greedy_generation_matches_uncached_argmax_loop():
    cfg, params = _model()
    prompts, valid = _left_padded_prompts()
    out = generate(jax.random.PRNGKey(1), params, cfg, prompts, valid, max_new_tokens=6,
                   eos_id=EOS, pad_id=PAD, greedy=True)
    for i in range(3):
        toks, vals = list(np.asarray(prompts[i])), list(np.asarray(valid[i]))
        want = []
        for _ in range(6):
            logits = _np_full_logits(cfg, params, jnp.array([toks]), jnp.array([vals]))
            nxt = int(np.argmax(logits[0, -1]))
            want.append(nxt)
            toks.append(nxt)
            vals.append(True)
            if nxt == EOS:
                break
        got = np.asarray(out.tokens[i])
        np.testing.assert_array_equal(got[: len(want)], want)
        assert np.all(np.asarray(out.mask[i])[: len(want)])
        assert not np.any(np.asarray(out.mask[i])[len(want):])
        assert np.all(got[len(want):] == PAD)


def test_sampling_stops_at_eos_and_masks_the_rest():
    cfg, params = _model()
    # Make EOS very likely so that many completions stop early.
    params = jax.tree_util.tree_map(lambda x: x, params)
    prompts = jnp.tile(jnp.array([[3, 4, 5]], jnp.int32), (256, 1))
    out = generate(jax.random.PRNGKey(3), params, cfg, prompts, jnp.ones_like(prompts, bool),
                   max_new_tokens=8, eos_id=EOS, pad_id=PAD, temperature=3.0)
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    assert mask[:, 0].all()
    for row, m in zip(tokens, mask):
        n = m.sum()
        assert m[:n].all() and not m[n:].any()  # a prefix
        assert (row[n:] == PAD).all()
        eos_at = np.flatnonzero(row[:n] == EOS)
        # EOS is the last kept token, or there is none and the completion ran to the end.
        assert (len(eos_at) == 1 and eos_at[0] == n - 1) or (len(eos_at) == 0 and n == 8)
    assert (mask.sum(1) < 8).any() and (mask.sum(1) == 8).any()


@pytest.mark.parametrize("setting", ["float", "traced", "bf16", "tools"])
def test_noise_drawn_before_decoding_gives_the_tokens_of_per_step_draws(setting):
    """The CPU backend draws every step's Gumbel noise before the decoding loop when it is
    small: the same tokens as the plain code's jax.random.categorical with each step's key,
    with a Python or a traced temperature and top-p, bf16 logits, and with tools."""
    import dataclasses

    from purejaxpo import backends
    from purejaxpo.backends import cpu

    cfg, params = _model()
    if setting == "bf16":
        params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
    prompts = jnp.tile(jnp.array([[3, 4, 5], [0, 6, 7]], jnp.int32), (16, 1))
    valid = prompts > 0
    tools = None
    if setting == "tools":
        from purejaxpo.lm.tools import ToolUse, calculator

        tool = calculator((3, 4, 5, 6), 7, 8, 9, max_call_tokens=4, max_result_tokens=3)
        tools = ToolUse(tool, call_open=10, call_close=1, result_close=5, error=6)

    def sample(temperature, top_p):
        return generate(jax.random.PRNGKey(5), params, cfg, prompts, valid, max_new_tokens=7,
                        eos_id=EOS, pad_id=PAD, temperature=temperature, top_p=top_p,
                        tools=tools)

    if setting == "traced":
        run = jax.jit(sample)
        args = (jnp.float32(1.7), jnp.float32(0.9))
    else:
        run, args = jax.jit(lambda: sample(1.7, 1.0)), ()
    drawn = []
    record = lambda *a: drawn.append(cpu.step_noise(*a)) or drawn[-1]  # noqa: E731
    with backends.use(dataclasses.replace(cpu.BACKEND, decoding_noise=record)):
        before = run(*args)
    assert drawn and drawn[0] is not None and drawn[0].shape == (7, 32, cfg.vocab_size)
    jax.clear_caches()
    with backends.use(backends.DEFAULT):  # each step draws its own noise
        per_step = jax.jit(sample)(*args) if setting == "traced" else jax.jit(
            lambda: sample(1.7, 1.0))()
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(per_step),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(np.asarray(before.tokens))) > 3


@pytest.mark.slow
def test_sampling_follows_the_tempered_distribution():
    """First sampled token frequencies match softmax(logits / T)."""
    cfg, params = _model()
    prompts = jnp.tile(jnp.array([[3, 4, 5]], jnp.int32), (20000, 1))
    valid = jnp.ones_like(prompts, bool)
    temperature = 1.7
    out = generate(jax.random.PRNGKey(4), params, cfg, prompts, valid, max_new_tokens=1,
                   eos_id=EOS, pad_id=PAD, temperature=temperature)
    logits = _np_full_logits(cfg, params, prompts[:1], valid[:1])[0, -1] / temperature
    p = np.exp(logits - logits.max())
    p /= p.sum()
    freq = np.bincount(np.asarray(out.tokens[:, 0]), minlength=V) / prompts.shape[0]
    np.testing.assert_allclose(freq, p, atol=0.015)


def _np_filter(logits, top_k, top_p):
    order = np.argsort(-logits)
    keep = np.zeros(len(logits), bool)
    if top_k:
        keep[order[:top_k]] = True
    else:
        keep[:] = True
    # top-p applies to the distribution left after top-k (renormalised), as in Hugging Face.
    p = np.where(keep, np.exp(logits - logits.max()), 0.0)
    p /= p.sum()
    mass = 0.0
    nucleus = np.zeros(len(logits), bool)
    for i in order:
        if mass < top_p:
            nucleus[i] = True
        mass += p[i]
    return keep & nucleus


@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (3, 1.0), (0, 0.5), (4, 0.8), (1, 0.9),
                                         (0, 1e-6)])
def test_filter_logits_matches_numpy(top_k, top_p, traced):
    """Static and traced ``top_p`` (a sweepable setting: the nucleus then sits under a
    ``lax.cond`` that skips the sort at 1.0) give the same filter as the NumPy reference."""
    rng = np.random.default_rng(top_k + int(top_p * 100))
    logits = rng.normal(size=(5, V)) * 2
    if traced:
        run = jax.jit(lambda x, p: filter_logits(x, top_k=top_k, top_p=p))
        got = np.asarray(run(jnp.float32(logits), jnp.float32(top_p)))
    else:
        got = np.asarray(filter_logits(jnp.float32(logits), top_k=top_k, top_p=top_p))
    for row, g in zip(logits, got):
        keep = _np_filter(row, top_k, top_p)
        assert np.array_equal(g > -1e30, keep)
        np.testing.assert_allclose(g[keep], row[keep], rtol=1e-6)


def test_top_k_sampling_never_leaves_the_top_k():
    cfg, params = _model()
    prompts = jnp.tile(jnp.array([[3, 4, 5]], jnp.int32), (4000, 1))
    valid = jnp.ones_like(prompts, bool)
    out = generate(jax.random.PRNGKey(5), params, cfg, prompts, valid, max_new_tokens=1,
                   eos_id=EOS, pad_id=PAD, temperature=5.0, top_k=2)
    logits = _np_full_logits(cfg, params, prompts[:1], valid[:1])[0, -1]
    assert set(np.unique(np.asarray(out.tokens[:, 0]))) <= set(np.argsort(-logits)[:2])


def test_completion_log_probs_match_per_prefix_softmax():
    cfg, params = _model()
    prompts, valid = _left_padded_prompts()
    comps = jnp.array([[3, 9, 2, 0], [4, 2, 0, 0], [7, 7, 7, 7]], jnp.int32)
    cmask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
    temperature = 0.7
    got, entropy = completion_log_probs(params, cfg, prompts, valid, comps, cmask, temperature,
                                        with_entropy=True)
    for i in range(3):
        toks, vals = list(np.asarray(prompts[i])), list(np.asarray(valid[i]))
        for t in range(4):
            if not cmask[i, t]:
                assert got[i, t] == 0.0
                continue
            logits = _np_full_logits(cfg, params, jnp.array([toks]), jnp.array([vals]))[0, -1]
            z = logits / temperature
            logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
            np.testing.assert_allclose(got[i, t], logp[int(comps[i, t])], atol=1e-4, rtol=1e-4)
            np.testing.assert_allclose(entropy[i, t], -(np.exp(logp) * logp).sum(), atol=1e-4,
                                       rtol=1e-4)
            toks.append(int(comps[i, t]))
            vals.append(True)


def test_prompt_too_long_for_context_raises():
    cfg, params = _model()
    prompts = jnp.zeros((1, 12), jnp.int32)
    with pytest.raises(ValueError, match="max_len"):
        generate(jax.random.PRNGKey(0), params, cfg, prompts, jnp.ones_like(prompts, bool),
                 max_new_tokens=8, eos_id=EOS, pad_id=PAD)


def test_prompt_group_prefills_once_per_group_with_the_same_completions():
    """``prompt_group=G`` on a batch where each prompt repeats G times in a row (GRPO's) gives
    the completions of the unshared prefill, greedy and sampled; a G that does not divide the
    batch is refused."""
    cfg, params = _model()
    prompts, valid = _left_padded_prompts()  # 3 prompts, left-padded
    group = 4
    prompts, valid = jnp.repeat(prompts, group, 0), jnp.repeat(valid, group, 0)
    for greedy in (True, False):
        outs = [generate(jax.random.PRNGKey(7), params, cfg, prompts, valid, max_new_tokens=4,
                         eos_id=EOS, pad_id=PAD, greedy=greedy, prompt_group=g)
                for g in (1, group)]
        np.testing.assert_array_equal(outs[0].tokens, outs[1].tokens)
        np.testing.assert_array_equal(outs[0].mask, outs[1].mask)
    with pytest.raises(ValueError, match="prompt_group=5"):
        generate(jax.random.PRNGKey(7), params, cfg, prompts, valid, max_new_tokens=4,
                 eos_id=EOS, pad_id=PAD, prompt_group=5)


@pytest.mark.parametrize("new_tokens", [1, 4])
@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_prompt_group_log_probs_match_the_full_pass(positions, new_tokens):
    """``completion_log_probs(prompt_group=G)`` (each prompt run once per group, completions
    through its cache) gives the log-probs, entropies (where the mask is true) and gradients
    of the one full pass over ``[prompt, completion]``."""
    cfg, params = _model(positions)
    prompts, valid = _left_padded_prompts()
    group = 4
    prompts, valid = jnp.repeat(prompts, group, 0), jnp.repeat(valid, group, 0)
    done = generate(jax.random.PRNGKey(1), params, cfg, prompts, valid,
                    max_new_tokens=new_tokens, eos_id=EOS, pad_id=PAD, prompt_group=group)
    assert new_tokens == 1 or not done.mask.all()  # some completions end early

    def scored(p, g):
        return completion_log_probs(p, cfg, prompts, valid, done.tokens, done.mask, 0.7,
                                    with_entropy=True, prompt_group=g)

    (lp1, ent1), (lpg, entg) = scored(params, 1), scored(params, group)
    np.testing.assert_allclose(lpg, lp1, atol=1e-5)
    np.testing.assert_allclose(np.where(done.mask, entg, 0), np.where(done.mask, ent1, 0),
                               atol=1e-5)
    grads = [jax.grad(lambda p: scored(p, g)[0].sum())(params) for g in (1, group)]
    for a, b in zip(*map(jax.tree_util.tree_leaves, grads)):
        np.testing.assert_allclose(b, a, atol=1e-4 * max(1.0, float(jnp.abs(a).max())))
    with pytest.raises(ValueError, match="prompt_group=5"):
        scored(params, 5)


def test_generate_needs_at_least_one_new_token():
    cfg, params = _model()
    prompts, valid = _left_padded_prompts()
    with pytest.raises(ValueError, match="max_new_tokens=0 is invalid"):
        generate(jax.random.PRNGKey(0), params, cfg, prompts, valid, max_new_tokens=0,
                 eos_id=EOS, pad_id=PAD)
