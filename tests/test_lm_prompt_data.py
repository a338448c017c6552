"""Prompt data from JSON lines with a Hugging Face tokenizer (purejaxpo/lm/tasks/prompt_data.py),
user rewards on strings, the free LoRA reference, and the `lm grpo|dpo|eval --model DIR` commands
on the tiny shipped checkpoints."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.lm.tasks.prompt_data import TokenizerFile, load_reward, text_reward
from purejaxpo.lm.tasks import make_task
from purejaxpo.lm.common import FromParams, reference_of
from purejaxpo.lm.config import LMGRPOConfig
from purejaxpo.lm.grpo import grpo_program, train_grpo
from purejaxpo.lm.lora import adapters_off, add_adapters
from purejaxpo.lm.pretrained import load_pretrained

HF = Path(__file__).parent / "data" / "hf"
LLAMA = str(HF / "llama")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def sums(tmp_path):
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(5) for b in range(4)]
    return _write(tmp_path / "sums.jsonl", rows)


def test_encoding_split_and_sampling(sums):
    task = make_task("jsonl", path=sums, model=LLAMA)
    tok = TokenizerFile(LLAMA)
    assert task.num_examples == (18, 2)  # the last tenth held out
    held = task.heldout(512)
    assert held.prompts.shape[0] == 2 == task.heldout_size(512)
    assert tok.decode(np.asarray(held.prompts[0])[np.asarray(held.prompt_valid[0])]) == "4+2="
    answer = np.asarray(held.answers[0])[np.asarray(held.answer_mask[0])]
    assert answer[-1] == tok.eos_id and tok.decode(answer) == "6"
    # Training draws never reach the held-out rows.
    batch = task.sample(jax.random.PRNGKey(0), 4096)
    held_prompts = {tuple(np.asarray(p)) for p in held.prompts}
    assert not held_prompts & {tuple(np.asarray(p)) for p in batch.prompts}
    # Left-padded prompts, right-padded answers.
    assert bool(jnp.all(batch.prompt_valid[:, -1])) and bool(jnp.all(batch.answer_mask[:, 0]))


@pytest.mark.parametrize("line, message", [
    ("not json", "line 2: not valid JSON"),
    ('{"prompt": "1+1="}', "line 2: missing field 'answer'"),
    ('{"prompt": 3, "answer": "4"}', "line 2: field 'prompt' must be a string"),
    ('[1, 2]', "line 2: expected a JSON object"),
])
def test_bad_lines_are_named(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "1+1=", "answer": "2"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        make_task("jsonl", path=str(path), model=LLAMA)


def test_bad_task_options_name_the_field(sums, tmp_path):
    with pytest.raises(ValueError, match="path="):
        make_task("jsonl", path=str(tmp_path / "missing.jsonl"), model=LLAMA)
    with pytest.raises(ValueError, match="model=.*tokenizer.json"):
        make_task("jsonl", path=sums, model=str(tmp_path))
    with pytest.raises(ValueError, match="heldout_fraction"):
        make_task("jsonl", path=sums, model=LLAMA, heldout_fraction=0.9)


def _reference_rewards(answer, completion, eos):
    """Plain-Python contains / prefix / correct on token lists (completion up to its EOS)."""
    body = [t for t in answer if t != eos]
    n = len(body)
    contains = any(completion[i:i + n] == body for i in range(len(completion) - n + 1))
    return (float(contains), float(completion[:n] == body),
            float(completion == body + [eos]))


def test_rewards_against_a_python_reference(sums):
    task = make_task("jsonl", path=sums, model=LLAMA)
    eos, pad = task.tokenizer.eos_id, task.tokenizer.pad_id
    rng = np.random.default_rng(0)
    batch = task.sample(jax.random.PRNGKey(1), 64)
    n = 6
    tokens = rng.integers(3, 12, size=(64, n))
    lengths = rng.integers(1, n + 1, size=64)
    for i in range(64):  # plant the answer in some rows, at a random place
        body = [t for t in np.asarray(batch.answers[i])[np.asarray(batch.answer_mask[i])]
                if t != eos]
        if i % 3 == 0:
            at = rng.integers(0, n - len(body) + 1)
            tokens[i, at:at + len(body)] = body
        if i % 6 == 0:
            tokens[i, :len(body)] = body
            lengths[i] = len(body) + 1
            tokens[i, len(body)] = eos
    mask = np.arange(n)[None, :] < lengths[:, None]
    tokens = np.where(mask, tokens, pad)
    got = [np.asarray(jax.jit(f)(batch, jnp.asarray(tokens), jnp.asarray(mask)))
           for f in (task.contains, task.prefix, task.exact_match)]
    for i in range(64):
        answer = list(np.asarray(batch.answers[i])[np.asarray(batch.answer_mask[i])])
        completion = list(tokens[i][mask[i]])
        expect = _reference_rewards(answer, completion, eos)
        assert tuple(float(g[i]) for g in got) == expect, i
    assert 0 < got[0].mean() < 1 and 0 < got[2].sum()


def test_text_reward_in_jit_and_vmap_equals_python_on_strings(sums, tmp_path):
    task = make_task("jsonl", path=sums, model=LLAMA)
    tok = task.tokenizer
    seen = []

    def length_match(prompt, completion, answer):
        seen.append(prompt)
        return len(completion) - len(answer) + 0.5 * prompt.endswith("=")

    batch = task.sample(jax.random.PRNGKey(2), 5)
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, 40, size=(5, 4)), jnp.int32)
    mask = jnp.arange(4)[None, :] < jnp.asarray([1, 2, 3, 4, 2])[:, None]
    reward = text_reward(length_match, tok)
    got = np.asarray(jax.jit(reward)(batch, tokens, mask))
    expect = [length_match(tok.decode(np.asarray(batch.prompts[i])[np.asarray(
        batch.prompt_valid[i])]), tok.decode(np.asarray(tokens[i])[np.asarray(mask[i])]),
        tok.decode(np.asarray(batch.answers[i])[np.asarray(batch.answer_mask[i])]))
        for i in range(5)]
    np.testing.assert_allclose(got, expect)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), (batch, tokens, mask))
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(reward))(*stacked)),
                               [expect, expect])
    # From a file, as --reward path.py:function names it.
    module = tmp_path / "my_rewards.py"
    module.write_text("def exact(prompt, completion, answer):\n"
                      "    return float(completion.strip() == answer.strip())\n")
    fn = load_reward(f"{module}:exact", tok)
    assert np.asarray(jax.jit(fn)(batch, batch.answers, batch.answer_mask)).tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="has no function 'nope'"):
        load_reward(f"{module}:nope", tok)
    with pytest.raises(ValueError, match="cannot import"):
        load_reward("no_such_module_here:fn", tok)


@pytest.fixture(scope="module")
def lora_llama():
    pre = load_pretrained(LLAMA)
    model, params = add_adapters(jax.random.PRNGKey(0), pre.params, pre.model, rank=4)
    return pre, model, params


def test_lora_reference_is_free_and_equals_the_base_model(tmp_path, lora_llama):
    pre, model, params = lora_llama
    data = _write(tmp_path / "d.jsonl",
                  [{"prompt": f"{a}+1=", "answer": str(a + 1)} for a in range(10)])
    config = LMGRPOConfig(task="jsonl", task_args={"path": data, "model": LLAMA}, steps=3,
                          prompts_per_step=4, group_size=4, max_new_tokens=3, beta=0.1,
                          learning_rate=1e-2, rewards=(("contains", 1.0), ("tokens", 0.5)))
    task = config.make_task()
    assert isinstance(reference_of(params), FromParams)
    free = grpo_program(config, params, model, task)
    stored = grpo_program(config, params, model, task, ref_params=adapters_off(params))
    key = jax.random.PRNGKey(3)
    s_free, s_stored = free.init(key), stored.init(key)
    assert s_free.ref is None and s_stored.ref is not None  # nothing kept for the free one
    (a, ma), (b, mb) = (jax.jit(p.run, static_argnums=1)(s, 3)
                        for p, s in ((free, s_free), (stored, s_stored)))
    np.testing.assert_allclose(np.asarray(ma["kl"]), np.asarray(mb["kl"]), rtol=1e-5,
                               atol=1e-7)
    assert float(ma["kl"][0]) == pytest.approx(0.0, abs=1e-6) and float(ma["kl"][-1]) > 0
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_grpo_with_lora_learns_a_prefix_reward(tmp_path, lora_llama):
    """A random tiny Llama, LoRA rank 4, learns to begin its answer with "cat"."""
    _, model, params = lora_llama
    data = _write(tmp_path / "cat.jsonl", [{"prompt": f"{a}+{b}=", "answer": "cat"}
                                           for a in range(10) for b in range(3)])
    config = LMGRPOConfig(task="jsonl", task_args={"path": data, "model": LLAMA}, steps=30,
                          log_every=30, prompts_per_step=8, group_size=8, max_new_tokens=4,
                          rewards=(("prefix", 1.0),), learning_rate=3e-2, beta=0.04)
    result = train_grpo(config, params, model, progress=False)
    reward = np.asarray(result.metrics["reward"])
    assert reward[:3].mean() < 0.3 and reward[-10:].mean() > 0.6, reward


def _cli(capsys, *argv):
    from purejaxpo.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_lm_commands_on_a_pretrained_model_end_to_end(tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", [{"prompt": f"{a}+{b}=", "answer": str(a + b)}
                                         for a in range(6) for b in range(3)])
    pairs = _write(tmp_path / "p.jsonl",
                   [{"prompt": f"{a}+1=", "chosen": str(a + 1), "rejected": str(a)}
                    for a in range(10)])
    reward_py = tmp_path / "rw.py"
    reward_py.write_text("def short(prompt, completion, answer):\n"
                         "    return -0.1 * len(completion)\n")
    out_dir, grpo_json = tmp_path / "tuned", tmp_path / "g.json"
    code, out, err = _cli(capsys, "lm", "grpo", "--model", LLAMA, "--data", data,
                          "--lora-rank", "8", "--steps", "2", "--set", "log_every=2",
                          "--set", "prompts_per_step=4", "--group-size", "4",
                          "--set", "max_new_tokens=3", "--reward", "contains=1",
                          "--reward", f"{reward_py}:short=1", "--no-progress",
                          "--json", str(grpo_json), "--out", str(out_dir))
    assert code == 0, err
    result = json.loads(grpo_json.read_text())
    assert 0 < result["trained_params"] < result["params"] / 5
    assert result["config"]["rewards"] == {"contains": 1.0, f"{reward_py}:short": 1.0}
    assert result["curve"][-1][f"reward/{reward_py}:short"] < 0
    assert "(2 prompts)" in out and "tokens/s" in out
    # --out wrote a Hugging Face checkpoint, adapters merged, that loads as a --model.
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json"]
    assert not any("lora" in "/".join(map(str, p)) for p, _ in
                   jax.tree_util.tree_leaves_with_path(load_pretrained(out_dir).params))
    code, out, err = _cli(capsys, "lm", "eval", "--model", str(out_dir), "--data", data,
                          "--examples", "2", "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    examples = json.loads((tmp_path / "e.json").read_text())["examples"]
    assert len(examples) == 2 and examples[0].startswith("5+1=")
    code, out, err = _cli(capsys, "lm", "dpo", "--model", str(HF / "qwen2"), "--pairs", pairs,
                          "--steps", "2", "--set", "log_every=2", "--set", "batch_size=4",
                          "--no-progress", "--json", str(tmp_path / "d.json"))
    assert code == 0, err
    result = json.loads((tmp_path / "d.json").read_text())
    assert result["pref_accuracy_before"] is not None and result["trained_params"] > 0


@pytest.mark.parametrize("argv, message", [
    (["lm", "grpo", "--model", LLAMA, "--steps", "1"], "--model needs --data"),
    (["lm", "grpo", "--model", LLAMA, "--data", "{data}", "--lora-rank", "-1"], "--lora-rank"),
    (["lm", "grpo", "--model", LLAMA, "--data", "{data}", "--lora-targets", "q,zz"],
     "--lora-targets"),
    (["lm", "grpo", "--model", LLAMA, "--data", "{data}", "--task", "addition"], "--task"),
    (["lm", "grpo", "--model", LLAMA, "--data", "{data}", "--reward", "nomod_xyz:fn"],
     "cannot import"),
    (["lm", "dpo", "--model", LLAMA], "--model needs --pairs"),
])
def test_pretrained_flag_errors_exit_2_naming_the_flag(tmp_path, capsys, sums, argv, message):
    code, _, err = _cli(capsys, *[a.replace("{data}", sums) for a in argv])
    assert code == 2 and message in err, err
