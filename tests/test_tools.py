"""Tool calls inside the jitted decoding loop (purejaxpo/lm/tools.py, sampling.generate):
the calculator against Python's integers, and the whole tool loop against a plain-Python loop
over the same sampled tokens (same key: identical transcripts)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.lm.tasks.sequence import ARITHMETIC_VOCAB, Tokenizer
from purejaxpo.lm.model import Transformer, TransformerConfig, init_params
from purejaxpo.lm.sampling import generate
from purejaxpo.lm.tools import ToolUse, calculator

VOCAB = ARITHMETIC_VOCAB + ("-", "*", "<call>", "</call>", "</result>", "<err>")
TOK = Tokenizer(VOCAB)
DIGITS = tuple(TOK.id(str(d)) for d in range(10))


def _calc(max_result_tokens=8, max_call_tokens=12):
    return calculator(DIGITS, TOK.id("+"), TOK.id("-"), TOK.id("*"),
                      max_call_tokens=max_call_tokens, max_result_tokens=max_result_tokens)


def _tools(max_calls=2, **kw):
    return ToolUse(_calc(**kw), call_open=TOK.id("<call>"), call_close=TOK.id("</call>"),
                   result_close=TOK.id("</result>"), error=TOK.id("<err>"),
                   max_calls=max_calls)


def python_calculator(text: str, max_result_tokens: int):
    """The reference: Python integers; None for a malformed call."""
    if not re.fullmatch(r"\d{1,6}([+\-*]\d{1,6})*", text):
        return None
    value, sign = 0, 1
    for part in re.split(r"([+\-])", text):  # terms and their signs; * binds tighter
        if part in "+-":
            sign = 1 if part == "+" else -1
            continue
        term = 1
        for factor in part.split("*"):
            term *= int(factor)
        value += sign * term
    if abs(value) >= 2e9 or len(str(value)) > max_result_tokens:
        return None
    return str(value)


@pytest.mark.parametrize("text", [
    "456*78", "12+34", "7-9", "2*3+4*5", "1-2*3-4", "0", "000123", "999999*999",
    "99999*99999", "123456*12345", "1234567", "", "+5", "5+", "5++6", "5*-6", "12=3",
    "98765*4321-1",
])
def test_calculator_against_python(text):
    m = 8
    fn = jax.jit(_calc(max_result_tokens=m).fn)
    ids = [TOK.id(ch) for ch in text]
    call = jnp.asarray(ids + [0] * (12 - len(ids)), jnp.int32)
    tokens, n, ok = fn(call, jnp.int32(len(ids)))
    expect = python_calculator(text, m)
    assert bool(ok) == (expect is not None), (text, expect)
    if expect is not None:
        assert "".join(VOCAB[int(t)] for t in np.asarray(tokens)[:int(n)]) == expect


def _model(seed=0):
    config = TransformerConfig(vocab_size=len(VOCAB), num_layers=1, width=32, num_heads=2,
                               mlp_ratio=2, max_len=48, tie_embeddings=False)
    return config, init_params(jax.random.PRNGKey(seed), config)


def python_tool_loop(params, config, tools, prompts, valid, key, n, temperature):
    """Decoding one token at a time with full forward passes (no KV cache) and the tool logic
    in plain Python: the same keys, so the same samples where the logits agree."""
    keys = jax.random.split(key, n)
    forward = jax.jit(lambda p, t, v: Transformer(config).apply({"params": p}, t, v)[0][:, -1])
    out = []
    for b in range(prompts.shape[0]):
        seq, seq_valid = list(np.asarray(prompts[b])), list(np.asarray(valid[b]))
        tokens, observed = [], []
        queue, in_call, call, calls, malformed, done = [], False, [], 0, 0, False
        for t in range(n):
            if done:
                tokens.append(TOK.pad_id), observed.append(False)
                continue
            logits = forward(params, jnp.asarray([seq]), jnp.asarray([seq_valid]))[0]
            # The batched sampler draws one categorical over the batch with this key.
            sampled = _row_draw(keys[t], logits, b, prompts.shape[0], temperature)
            if queue:
                token, is_obs = queue.pop(0), True
            else:
                token, is_obs = sampled, False
                if token == TOK.eos_id:  # the end, inside a call or not
                    done = True
                elif not in_call and token == tools.call_open:
                    in_call, call = True, []
                elif in_call and token == tools.call_close:
                    in_call = False
                    text = "".join(VOCAB[i] for i in call)
                    overflow = len(call) > tools.tool.max_call_tokens
                    result = None if overflow else python_calculator(
                        text, tools.tool.max_result_tokens)
                    malformed += result is None
                    if result is None or calls >= tools.max_calls:
                        queue = [tools.error, tools.result_close]
                    else:
                        queue = [TOK.id(ch) for ch in result] + [tools.result_close]
                    calls += 1
                elif in_call:
                    call.append(token)
            tokens.append(token), observed.append(is_obs)
            seq.append(token), seq_valid.append(True)
        out.append((tokens, observed, calls, malformed))
    return out


def _row_draw(key, logits, row, batch, temperature):
    """Row ``row`` of ``jax.random.categorical(key, logits [batch, V])``: the batched draw
    uses one key for the whole batch, so reproduce it with this row's logits in place."""
    full = jnp.zeros((batch, logits.shape[-1]), logits.dtype).at[row].set(logits)
    return int(jax.random.categorical(key, full / temperature, axis=-1)[row])


def test_tool_loop_equals_a_python_loop_over_the_same_samples():
    config, params = _model(seed=3)
    tools = _tools(max_calls=2, max_result_tokens=6, max_call_tokens=5)
    b, p, n = 8, 4, 40
    prompts = jax.random.randint(jax.random.PRNGKey(1), (b, p), 3, 13)
    valid = jnp.ones((b, p), bool).at[1, 0].set(False)  # one left-padded prompt
    # Make the tool's tokens likely (weights and key picked so that this batch has rows
    # without calls, good calls, malformed calls and a call past max_calls).
    bias = np.zeros(len(VOCAB), np.float32)
    bias[TOK.id("<call>")], bias[list(DIGITS)], bias[TOK.id("</call>")] = 1.0, 1.0, 2.0
    key = jax.random.PRNGKey(8)
    biased = _with_logit_bias(params, config, bias)
    got = jax.jit(lambda p: generate(key, p, config, prompts, valid, max_new_tokens=n,
                                     eos_id=TOK.eos_id, pad_id=TOK.pad_id, tools=tools))(biased)
    ref = python_tool_loop(biased, config, tools, prompts, valid, key, n, 1.0)
    tokens, observed = np.asarray(got.tokens), np.asarray(got.observed)
    for row, (r_tokens, r_obs, r_calls, r_bad) in enumerate(ref):
        assert list(tokens[row]) == r_tokens, row
        assert list(observed[row]) == r_obs, row
        assert int(got.calls[row]) == r_calls and int(got.malformed[row]) == r_bad, row
    # The sample exercised what it should: calls, results, malformed calls, surplus calls.
    calls, bad = np.asarray(got.calls), np.asarray(got.malformed)
    assert (calls == 0).any() and (calls > 0).any()  # only some sequences call
    assert (calls > tools.max_calls).any() and bad.sum() >= 1 and (calls - bad).sum() >= 2
    results = set(tokens[observed])
    assert TOK.id("</result>") in results and TOK.id("<err>") in results
    assert results & set(DIGITS)


def _with_logit_bias(params, config, bias):
    """``params`` whose logits lean towards ``bias``: the final norm's output gets +4 on
    feature 0 and the head's row 0 gets ``bias / 4`` (roughly ``bias`` added to the logits)."""
    params = jax.tree_util.tree_map(lambda x: x, params)
    w = np.asarray(params["head"]["kernel"]).copy()
    ln_bias = np.asarray(params["ln_final"]["bias"]).copy()
    ln_bias[0] += 4.0
    w[0] += bias / 4.0
    params["head"]["kernel"] = jnp.asarray(w)
    params["ln_final"]["bias"] = jnp.asarray(ln_bias)
    return params


def test_tools_enabled_but_never_called_change_nothing():
    """The tool loop's bookkeeping leaves a completion without calls exactly as it was: a
    call-opening token outside the vocabulary, so no sequence can call."""
    config, params = _model(seed=5)
    prompts = jax.random.randint(jax.random.PRNGKey(2), (4, 3), 3, 13)
    valid = jnp.ones((4, 3), bool)
    calc = _tools()
    never = ToolUse(calc.tool, call_open=len(VOCAB), call_close=calc.call_close,
                    result_close=calc.result_close, error=calc.error)
    for greedy in (True, False):
        run = lambda tools: generate(jax.random.PRNGKey(0), params, config, prompts, valid,  # noqa
                                     max_new_tokens=12, eos_id=TOK.eos_id, pad_id=TOK.pad_id,
                                     greedy=greedy, tools=tools)
        plain, with_tools = run(None), run(never)
        np.testing.assert_array_equal(plain.tokens, with_tools.tokens)
        np.testing.assert_array_equal(plain.mask, with_tools.mask)
        assert not np.asarray(with_tools.observed).any()
        assert int(with_tools.calls.sum()) == 0


def test_bad_tool_settings_name_the_field():
    with pytest.raises(ValueError, match="four different tokens"):
        ToolUse(_calc(), call_open=1, call_close=1, result_close=2, error=3)
    with pytest.raises(ValueError, match="max_calls=0"):
        ToolUse(_calc(), call_open=1, call_close=2, result_close=3, error=4, max_calls=0)
    with pytest.raises(ValueError, match="max_result_tokens=0"):
        ToolUse(_calc(max_result_tokens=0), call_open=1, call_close=2, result_close=3, error=4)


@pytest.mark.parametrize("ratio_level, aggregation", [
    ("token", "sequence_mean"), ("sequence", "token_mean"), ("token", "constant")])
def test_gradient_does_not_depend_on_the_logits_at_tool_results(ratio_level, aggregation):
    """The policy loss, its KL and entropy terms, computed on the actions (mask & ~observed):
    the gradient with respect to the logits is exactly zero at tool-result positions."""
    from purejaxpo.lm.objectives import grpo_loss
    from purejaxpo.lm.sampling import log_probs_from_logits
    from purejaxpo.losses import masked_mean

    b, n, v = 4, 9, 13
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    logits = jax.random.normal(keys[0], (b, n, v))
    tokens = jax.random.randint(keys[1], (b, n), 0, v)
    valid = jnp.arange(n)[None, :] < jnp.asarray([9, 7, 5, 9])[:, None]
    observed = jnp.zeros((b, n), bool).at[:, 2:4].set(True).at[3, 6].set(True) & valid
    actions = valid & ~observed
    ref = jax.random.normal(keys[2], (b, n)) * 0.1 - 2.0
    adv = jax.random.normal(keys[3], (b,))

    def loss(logits):
        log_prob, entropy = log_probs_from_logits(logits, tokens, actions, 0.8,
                                                  with_entropy=True)
        old = jax.lax.stop_gradient(log_prob) + 0.05
        value, _ = grpo_loss(log_prob, old, adv, actions, clip_low=0.2, clip_high=0.28,
                             ref_log_prob=ref, beta=0.1, ratio_level=ratio_level,
                             aggregation=aggregation)
        return value - 0.01 * masked_mean(entropy, actions)

    grad = np.asarray(jax.grad(loss)(logits))
    assert np.all(grad[np.asarray(observed)] == 0.0)
    assert np.all(np.abs(grad[np.asarray(actions)]).sum(-1) > 0)


def test_tool_results_are_attended_to_but_not_scored():
    from purejaxpo.lm.sampling import completion_log_probs

    config, params = _model(seed=1)
    prompts = jnp.asarray([[4, 5, 6]])
    valid = jnp.ones_like(prompts, bool)
    tokens = jnp.asarray([[16, 3, 4, 17, 5, 18, 6, 7, 2]])  # ... a result (3 tokens) ...
    observed = jnp.zeros_like(tokens, bool).at[0, 4:6].set(True)
    mask = jnp.ones_like(tokens, bool)
    lp = jax.jit(lambda t: completion_log_probs(
        params, config, prompts, valid, t, mask & ~observed, completion_valid=mask))
    before, after = lp(tokens), lp(tokens.at[0, 4].set(9))  # another tool result
    assert np.all(np.asarray(before)[0, 4:6] == 0.0)  # not scored
    np.testing.assert_array_equal(before[0, :5], after[0, :5])  # causal: earlier unchanged
    assert not np.allclose(before[0, 6:], after[0, 6:])  # later actions read the result


# -- the multiply task, its traces and rewards -------------------------------------------------


def _multiply(**kw):
    from purejaxpo.lm.tasks import make_task

    return make_task("multiply", **kw)


def test_multiply_traces_agree_with_the_calculator_and_score_as_answers():
    from purejaxpo.lm.tools import result_for_call

    task = _multiply(tools="calculator", tool_traces=0.5)
    tok, tools = task.tokenizer, task.tool_use
    batch = task.sample(jax.random.PRNGKey(0), 64)
    traced = np.asarray(batch.answer_observed).any(axis=1)
    assert 10 < traced.sum() < 54  # about half
    a, b = (np.asarray(x) for x in task._operands(batch.prompts))
    for i in range(64):
        answer = [VOCAB[t] for t, m in zip(np.asarray(batch.answers[i]),
                                           np.asarray(batch.answer_mask[i])) if m]
        final = answer[answer.index("</result>") + 1:-1] if traced[i] else answer[:-1]
        assert "".join(final) == str(a[i] * b[i]) and answer[-1] == "<eos>"
        if traced[i]:  # the observed part is exactly what the calculator writes
            call = [tok.id(t) for t in answer[1:answer.index("</call>")]]
            queue, n, bad = result_for_call(
                tools, jnp.asarray(call + [0] * (12 - len(call))), jnp.int32(len(call)),
                jnp.bool_(False), jnp.int32(0))
            obs = np.asarray(batch.answers[i])[np.asarray(batch.answer_observed[i])]
            assert list(obs) == list(np.asarray(queue)[:int(n)]) and not bool(bad)
    rewards = {k: np.asarray(f(batch, batch.answers, batch.answer_mask))
               for k, f in task.reward_functions().items()}
    assert (rewards["correct"] == 1).all() and (rewards["format"] == 1).all()
    assert (rewards["digits"] == 1).all() and (rewards["calls"] == traced).all()
    wrong = batch.answers.at[:, 0].set(jnp.where(jnp.asarray(traced), batch.answers[:, 0],
                                                 tok.id("0")))
    assert (np.asarray(task.exact_match(batch, wrong, batch.answer_mask))[~traced] == 0).all()
    err = batch.answers.at[:, 9].set(jnp.where(jnp.asarray(traced), tok.id("<err>"),
                                               batch.answers[:, 9]))
    assert (np.asarray(task.format_ok(batch, err, batch.answer_mask))[traced] == 0).all()


def test_sft_trains_on_the_policy_tokens_of_a_trace_only():
    from purejaxpo.lm.common import init_state
    from purejaxpo.lm.config import LMSFTConfig
    from purejaxpo.lm.sampling import completion_log_probs
    from purejaxpo.lm.sft import make_sft_step

    config = LMSFTConfig(task="multiply", task_args={"tool_traces": 1.0, "tools": "calculator"},
                         batch_size=8, num_layers=1, width=32, num_heads=2, mlp_ratio=2)
    task, model = config.make_task(), config.model_config()
    params = init_params(jax.random.PRNGKey(0), model)
    step = make_sft_step(config, model, task)
    state = init_state(jax.random.PRNGKey(5), params, config.hyperparams())
    # The step draws its batch from split(state.key)[1]: recompute the loss by hand on it.
    batch_key = jax.random.split(state.key)[1]
    batch = task.sample(batch_key, 8)
    target = batch.answer_mask & ~batch.answer_observed
    lp = completion_log_probs(params, model, batch.prompts, batch.prompt_valid, batch.answers,
                              batch.answer_mask)
    want = -float(np.sum(np.asarray(lp)[np.asarray(target)]) / np.asarray(target).sum())
    _, metrics = jax.jit(step)(state, config.hyperparams())
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-5)


def test_a_users_own_tool_from_python():
    """A tool that returns its call reversed, registered by name and used by the task."""
    from purejaxpo.lm.sampling import generate
    from purejaxpo.lm.tools import TOOLS, Tool, register_tool

    def reverse(call, length):
        idx = jnp.clip(length - 1 - jnp.arange(call.shape[0]), 0, call.shape[0] - 1)
        return call[idx][:4], jnp.minimum(length, 4), length > 0

    def factory(task):
        tok = task.tokenizer
        return ToolUse(Tool(reverse, max_call_tokens=6, max_result_tokens=4, name="reverse"),
                       call_open=tok.id("<call>"), call_close=tok.id("</call>"),
                       result_close=tok.id("</result>"), error=tok.id("<err>"), max_calls=3)

    register_tool("reverse_test", factory)
    try:
        task = _multiply(tools="reverse_test")
        config, params = _model(seed=3)
        bias = np.zeros(len(VOCAB), np.float32)
        bias[TOK.id("<call>")], bias[list(DIGITS)], bias[TOK.id("</call>")] = 1.0, 1.0, 2.0
        params = _with_logit_bias(params, config, bias)
        batch = task.sample(jax.random.PRNGKey(0), 8)
        out = jax.jit(lambda p: generate(jax.random.PRNGKey(8), p, config, batch.prompts,
                                         batch.prompt_valid, max_new_tokens=30,
                                         eos_id=TOK.eos_id, pad_id=TOK.pad_id,
                                         tools=task.tool_use))(params)
        tokens, observed = np.asarray(out.tokens), np.asarray(out.observed)
        checked = 0
        for row in range(8):
            seq = list(tokens[row])
            for start in [i for i, t in enumerate(seq) if t == TOK.id("</call>")]:
                if start + 1 >= len(seq) or not observed[row, start + 1]:
                    continue  # not a call's end (no call open), or nothing written after
                opened = max(i for i in range(start) if seq[i] == TOK.id("<call>"))
                call = seq[opened + 1:start]
                if not 0 < len(call) <= 6:
                    continue
                n = min(len(call), 4)
                assert seq[start + 1:start + 1 + n] == call[::-1][:n]
                checked += 1
        assert checked >= 1
    finally:
        del TOOLS["reverse_test"]


def test_bad_multiply_options_name_the_field():
    with pytest.raises(ValueError, match="tools='abacus' is invalid"):
        _multiply(tools="abacus")
    with pytest.raises(ValueError, match="tool_traces"):
        _multiply(tool_traces=1.5)
    with pytest.raises(ValueError, match="digits_a"):
        _multiply(digits_a=7)


def test_grpo_learns_to_call_the_calculator_from_the_command_line(tmp_path, capsys):
    """SFT on mostly direct answers (20% traces), then GRPO with the calculator: the policy
    learns to call it and held-out exact match rises by at least 30 points; `lm eval` shows
    the calls and results in its transcripts."""
    import json

    from purejaxpo.cli import main

    def run(*argv):
        code = main(list(argv))
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return captured.out

    run("lm", "sft", "--task", "multiply", "--task-arg", "tool_traces=0.2", "--tools",
        "calculator", "--steps", "200", "--set", "log_every=100", "--set", "eval_prompts=128",
        "--no-progress", "--out", str(tmp_path / "sft"))
    run("lm", "grpo", "--init", str(tmp_path / "sft"), "--tools", "calculator", "--steps", "40",
        "--set", "log_every=20", "--set", "eval_prompts=128", "--no-progress",
        "--json", str(tmp_path / "grpo.json"), "--out", str(tmp_path / "grpo"))
    result = json.loads((tmp_path / "grpo.json").read_text())
    assert result["config"]["task_args"]["tools"] == "calculator"
    assert result["exact_match_after"] >= result["exact_match_before"] + 0.3, result["curve"]
    calls = [row["tool/calls"] for row in result["curve"][1:]]
    assert calls[-1] > 0.5 and result["curve"][-1]["tool/malformed_rate"] < 0.2, calls
    out = run("lm", "eval", "--init", str(tmp_path / "grpo"), "--num-prompts", "64",
              "--examples", "3", "--json", str(tmp_path / "eval.json"))
    assert "tool calls per completion" in out and "<call>" in out and "</result>" in out
    tools = json.loads((tmp_path / "eval.json").read_text())["tools"]
    assert tools["used"] > 0.5 and tools["exact_with"] > 0.5


@pytest.mark.parametrize("trainer", ["ppo", "reinforce_pp"])
def test_ppo_and_reinforce_pp_steps_run_with_tool_calls(trainer):
    """A random policy on multiply with the calculator calls it now and then; the PPO and
    REINFORCE++ steps (GAE and returns over the policy's tokens only) stay finite."""
    from purejaxpo.lm.config import LMGRPOConfig, LMPPOConfig, LMSFTConfig
    from purejaxpo.lm.grpo import grpo_program
    from purejaxpo.lm.ppo import ppo_program

    task_args = {"tools": "calculator"}
    model = LMSFTConfig(task="multiply", task_args=task_args, num_layers=1, width=32,
                        num_heads=2, mlp_ratio=2).model_config()
    params = init_params(jax.random.PRNGKey(0), model)
    common = dict(task="multiply", task_args=task_args, steps=2, prompts_per_step=8,
                  group_size=4)
    if trainer == "ppo":
        config = LMPPOConfig(**common, kl_coef=0.05)
        program = ppo_program(config, params, model, config.make_task())
    else:
        config = LMGRPOConfig(**common, estimator="reinforce_pp")
        program = grpo_program(config, params, model, config.make_task())
    state = jax.jit(program.init)(jax.random.PRNGKey(1))
    _, metrics = jax.jit(program.run, static_argnums=1)(state, 2)
    assert float(np.sum(metrics["tool/calls"])) > 0
    for name, value in metrics.items():
        assert np.all(np.isfinite(np.asarray(value))), name
