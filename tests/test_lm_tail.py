"""Decoding only the unfinished rows after a point (``purejaxpo.backends.cpu.Tail``): the same tokens as
every row to the end, on every branch of the switch (no live row, some, most), with noise drawn
before the loop or per step and greedy, under ``vmap``, in a GRPO step, and never in sweeps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import backends
from purejaxpo.backends import cpu
from purejaxpo.backends.cpu import Tail, live_tail
from purejaxpo.lm.config import LMGRPOConfig, LMSFTConfig
from purejaxpo.lm.model import TransformerConfig, init_params
from purejaxpo.lm.sampling import generate

V, PAD = 11, 0
B, N, GROUP = 16, 10, 4


@pytest.fixture(autouse=True)
def _cpu_backend():
    """The tail is the CPU backend's: these tests trace with its hooks (noise drawn ahead)."""
    with backends.use(cpu.BACKEND):
        yield


def _model():
    cfg = TransformerConfig(vocab_size=V, num_layers=2, width=32, num_heads=4, max_len=16,
                            positions="learned")
    params = init_params(jax.random.PRNGKey(0), cfg)
    # Larger weights than the default init: peaked distributions, varied completion lengths.
    params = jax.tree_util.tree_map(lambda x: x * 4.0 if x.ndim == 2 else x, params)
    return cfg, params


def _prompts():
    key = jax.random.PRNGKey(2)
    prompts = jax.random.randint(key, (B // GROUP, 5), 1, V)
    valid = jnp.ones_like(prompts, bool).at[1::2, 0].set(False)  # some left padding
    # Each prompt GROUP times in a row, as prompt_group promises.
    return (jnp.repeat(jnp.where(valid, prompts, PAD), GROUP, axis=0),
            jnp.repeat(valid, GROUP, axis=0))


def _live_after(mask, start):
    """How many rows are still going after ``start`` tokens (what the switch picks on)."""
    return int(np.asarray(mask)[:, start].sum())


@pytest.mark.parametrize("noise", ["drawn_before", "per_step", "greedy"])
def test_generate_with_a_tail_gives_the_same_completions(noise, monkeypatch):
    """Tails from three starts, three temperatures and prompt sets (so the number of rows
    still going at a tail's start runs from none to most): the tokens and masks of the plain
    decode, exactly. One compile: the switch picks its branch at run time."""
    if noise == "per_step":
        monkeypatch.setattr(cpu, "PRECOMPUTED_NOISE_ELEMENTS", 0)
    cfg, params = _model()
    tails = [Tail(start=2, rows=2), Tail(start=5, rows=4), Tail(start=8, rows=B)]

    @jax.jit
    def run(key, temperature, prompts, valid):
        return [generate(key, params, cfg, prompts, valid, max_new_tokens=N, eos_id=8,
                         pad_id=PAD, temperature=temperature, top_k=8,
                         greedy=noise == "greedy", prompt_group=GROUP, tail=t)
                for t in [None, *tails]]

    seen = set()
    prompts, valid = _prompts()
    for i, temperature in enumerate([1.5, 0.5, 3.0]):
        plain, *tailed = run(jax.random.PRNGKey(i), temperature,
                             jnp.roll(prompts, i, axis=1), jnp.roll(valid, i, axis=1))
        for t, out in zip(tails, tailed, strict=True):
            np.testing.assert_array_equal(out.tokens, plain.tokens)
            np.testing.assert_array_equal(out.mask, plain.mask)
            live = _live_after(plain.mask, t.start)
            seen.add("none" if live == 0 else "some" if live <= B // 2 else "most")
    assert {"some", "most"} <= seen and (noise != "greedy" or "none" in seen), seen


def test_generate_tail_under_vmap_matches_single_calls():
    """Under ``vmap`` over keys the switch runs all its branches and selects: the same
    completions as each key alone."""
    cfg, params = _model()
    prompts, valid = _prompts()
    tail = Tail(start=3, rows=4)

    def sample(key, t):
        return generate(key, params, cfg, prompts, valid, max_new_tokens=N, eos_id=3,
                        pad_id=PAD, prompt_group=GROUP, tail=t)

    keys = jax.random.split(jax.random.PRNGKey(9), 4)
    batched = jax.jit(jax.vmap(lambda k: sample(k, tail)))(keys)
    for i, key in enumerate(keys):
        single = jax.jit(lambda k: sample(k, None))(key)
        np.testing.assert_array_equal(batched.tokens[i], single.tokens)
        np.testing.assert_array_equal(batched.mask[i], single.mask)


def test_bad_tails_are_refused_before_compiling():
    cfg, params = _model()
    prompts, valid = _prompts()
    kw = dict(max_new_tokens=N, eos_id=3, pad_id=PAD)
    for tail, match in [(Tail(0, 4), "tail.start=0 is invalid"),
                        (Tail(N, 4), f"tail.start={N} is invalid"),
                        (Tail(2, 0), "tail.rows=0 is invalid"),
                        (Tail(2, B + 1), f"tail.rows={B + 1} is invalid")]:
        with pytest.raises(ValueError, match=match):
            generate(jax.random.PRNGKey(0), params, cfg, prompts, valid, tail=tail, **kw)
    from purejaxpo.lm.tools import ToolUse, calculator

    tools = ToolUse(calculator((3, 4, 5, 6), 7, 8, 9, max_call_tokens=4, max_result_tokens=3),
                    call_open=10, call_close=1, result_close=5, error=6)
    with pytest.raises(ValueError, match="invalid with tools"):
        generate(jax.random.PRNGKey(0), params, cfg, prompts, valid, tail=Tail(2, 4),
                 tools=tools, **kw)


def test_live_tail_defaults():
    assert live_tail(64, 32) == Tail(start=16, rows=32)
    assert live_tail(6, 9) == Tail(start=4, rows=3)
    assert live_tail(64, 7) is None  # too few tokens to pay for the gathers
    assert live_tail(1, 32) is None


def test_compact_tail_setting():
    assert LMGRPOConfig().compact_tail is None
    assert LMGRPOConfig().decoding_tail(64, 32) == Tail(16, 32)  # the CPU backend's hook
    with backends.use(backends.DEFAULT):
        assert LMGRPOConfig().decoding_tail(64, 32) is None
        assert LMGRPOConfig(compact_tail=True).decoding_tail(64, 32) == Tail(16, 32)
    assert LMGRPOConfig(compact_tail=False).decoding_tail(64, 32) is None
    with pytest.raises(ValueError, match="compact_tail"):
        LMGRPOConfig(compact_tail="yes")


def _grpo_runs(steps=3):
    from purejaxpo.lm.grpo import grpo_program

    model = LMSFTConfig(num_layers=1, width=32, num_heads=2, mlp_ratio=2).model_config()
    params = init_params(jax.random.PRNGKey(0), model)
    out = []
    for compact in (False, True):
        config = LMGRPOConfig(prompts_per_step=2, group_size=4, max_new_tokens=12,
                              learning_rate=3e-3, compact_tail=compact)
        program = grpo_program(config, params, model, config.make_task())
        out.append(jax.jit(lambda s, p=program: p.run(s, steps))(
            program.init(jax.random.PRNGKey(1))))
    return out


def test_grpo_step_with_compact_tail_matches_the_plain_step():
    """Three GRPO steps with 12-token completions: the same completions, rewards, metrics and
    parameters with and without the tail."""
    (plain, m_plain), (compact, m_compact) = _grpo_runs()
    lengths = np.asarray(m_plain["completion_length"])
    assert (lengths > 1).all() and (lengths < 12).all()  # completions of varied lengths
    for name in ("completion_tokens", "reward", "exact_match"):
        np.testing.assert_array_equal(m_compact[name], m_plain[name])
    for name in ("loss", "entropy"):
        np.testing.assert_allclose(m_compact[name], m_plain[name], rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(plain.params),
                    jax.tree_util.tree_leaves(compact.params), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_sweeps_run_without_the_tail(monkeypatch):
    """A sweep vmaps its runs, where a switch runs every branch: with ``compact_tail`` left to
    the backend, the sweep's program has no tail."""
    from purejaxpo.lm.checkpoint import Policy
    from purejaxpo.sweep.lm import make_lm_run_fn

    model = LMSFTConfig(num_layers=1, width=32, num_heads=2, mlp_ratio=2).model_config()
    policy = Policy(init_params(jax.random.PRNGKey(0), model), model, "addition", {}, {})

    def refuse(*a, **k):
        raise AssertionError("a tail in a sweep")

    monkeypatch.setattr(cpu, "_over_live_rows", refuse)
    config = LMGRPOConfig(prompts_per_step=4, group_size=4, max_new_tokens=12, steps=2,
                          log_every=2, eval_prompts=8)
    run = make_lm_run_fn(config, policy)
    jax.eval_shape(run, jax.random.PRNGKey(0), config.hyperparams())
    with pytest.raises(AssertionError, match="a tail in a sweep"):
        jax.eval_shape(make_lm_run_fn(config.replace(compact_tail=True), policy),
                       jax.random.PRNGKey(0), config.hyperparams())
