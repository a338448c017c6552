"""Synthetic sequence tasks: data, tokenizer and reward functions against plain Python."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.lm.tasks import make_task
from purejaxpo.lm.tasks.sequence import AdditionTask, SortingTask, Tokenizer


def _ints(tok, ids):
    return "".join(tok.vocab[i] for i in ids if tok.vocab[i].isdigit())


@pytest.mark.parametrize("digits,reverse", [(3, True), (3, False), (1, True), (5, True)])
def test_addition_answers_are_the_sums(digits, reverse):
    task = AdditionTask(digits=digits, reverse=reverse)
    batch = task.sample(jax.random.PRNGKey(digits), 200)
    tok = task.tokenizer
    assert batch.prompts.shape == (200, task.prompt_len)
    assert batch.answers.shape == (200, task.answer_len)
    for prompt, answer in zip(np.asarray(batch.prompts), np.asarray(batch.answers)):
        text = tok.decode(prompt)
        a, b = text.replace(" ", "").rstrip("=").split("+")
        assert len(a) == len(b) == digits
        total = str(int(a) + int(b)).zfill(digits + 1)
        digits_out = _ints(tok, answer)
        assert digits_out == (total[::-1] if reverse else total)
        assert answer[-1] == tok.eos_id


def test_sorting_answers_are_sorted_prompts():
    task = SortingTask(length=6)
    batch = task.sample(jax.random.PRNGKey(0), 100)
    tok = task.tokenizer
    for prompt, answer in zip(np.asarray(batch.prompts), np.asarray(batch.answers)):
        assert _ints(tok, answer) == "".join(sorted(_ints(tok, prompt)))
        assert tok.vocab[prompt[-1]] == "=" and answer[-1] == tok.eos_id


def test_sampling_is_seeded_and_heldout_is_fixed():
    task = AdditionTask()
    a = task.sample(jax.random.PRNGKey(1), 8)
    b = task.sample(jax.random.PRNGKey(1), 8)
    c = task.sample(jax.random.PRNGKey(2), 8)
    assert np.array_equal(a.prompts, b.prompts) and not np.array_equal(a.prompts, c.prompts)
    assert np.array_equal(task.heldout(512).prompts, task.heldout(512).prompts)
    assert task.heldout(512).prompts.shape == (512, 8)


def _np_rewards(tok, answer, tokens, mask):
    """(correct, format, digits) of one completion, in plain Python."""
    comp = [int(t) for t, m in zip(tokens, mask) if m]
    ans = [int(t) for t in answer if t != tok.pad_id]
    correct = float(comp == ans)
    digit_ids = {tok.id(str(d)) for d in range(10)}
    fmt = float(len(comp) == len(ans) and comp[-1] == tok.eos_id
                and all(t in digit_ids for t in comp[:-1]))
    scored = ans[:-1]
    digits = sum(1 for i, t in enumerate(scored) if i < len(comp) and comp[i] == t) / len(scored)
    return correct, fmt, digits


def test_rewards_match_python_on_crafted_and_random_completions():
    task = AdditionTask()
    tok = task.tokenizer
    batch = task.sample(jax.random.PRNGKey(0), 6)
    ans = np.asarray(batch.answers)
    eos, pad, d = tok.eos_id, tok.pad_id, tok.id("7")
    n = task.answer_len + 1  # completions may be longer than answers
    rows = [
        list(ans[0]) + [pad],                      # exactly right
        list(ans[1][:-1]) + [d, eos],              # one digit too many
        list(ans[2][:2]) + [eos, pad, pad, pad],   # stops early
        [ans[3][0], tok.id("+")] + list(ans[3][2:]) + [pad],  # a non-digit in the answer
        [d if t != d else tok.id("8") for t in ans[4][:-1]] + [eos, pad],  # every digit wrong
        list(ans[5][:-1]) + [d, d],                # never stops
    ]
    tokens = np.array(rows, np.int32)
    mask = np.zeros_like(tokens, bool)
    for i, row in enumerate(rows):
        stop = row.index(eos) + 1 if eos in row else n
        mask[i, :stop] = True
    got = {name: np.asarray(fn(batch, jnp.asarray(tokens), jnp.asarray(mask)))
           for name, fn in task.reward_functions().items()}
    for i in range(6):
        c, f, dg = _np_rewards(tok, ans[i], tokens[i], mask[i])
        assert got["correct"][i] == c
        assert got["format"][i] == f
        np.testing.assert_allclose(got["digits"][i], dg)
    assert list(got["correct"]) == [1, 0, 0, 0, 0, 0]
    assert list(got["format"]) == [1, 0, 0, 0, 1, 0]

    rng = np.random.default_rng(0)
    big = task.sample(jax.random.PRNGKey(9), 300)
    tokens = np.where(rng.random((300, n)) < 0.7,
                      np.pad(np.asarray(big.answers), ((0, 0), (0, 1))),
                      rng.integers(0, tok.size, (300, n))).astype(np.int32)
    mask = np.ones_like(tokens, bool)
    for i, row in enumerate(tokens):
        hits = np.flatnonzero(row == eos)
        if len(hits):
            mask[i, hits[0] + 1:] = False
            tokens[i, hits[0] + 1:] = pad
    got = {name: np.asarray(fn(big, jnp.asarray(tokens), jnp.asarray(mask)))
           for name, fn in task.reward_functions().items()}
    for i in range(300):
        c, f, dg = _np_rewards(tok, np.asarray(big.answers[i]), tokens[i], mask[i])
        assert (got["correct"][i], got["format"][i]) == (c, f)
        np.testing.assert_allclose(got["digits"][i], dg, rtol=1e-6)
    assert 0 < got["correct"].mean() < 1


def test_rewards_jit():
    task = SortingTask()
    batch = task.sample(jax.random.PRNGKey(0), 4)
    fn = jax.jit(task.exact_match)
    assert np.all(np.asarray(fn(batch, batch.answers, batch.answer_mask)) == 1.0)


def test_tokenizer_round_trip_and_errors():
    tok = Tokenizer()
    assert tok.size == 15
    ids = tok.encode("1 2 3 + 4 5 6 =")
    assert ids == tok.encode("123+456=")
    assert tok.decode(ids) == "1 2 3 + 4 5 6 ="
    assert tok.decode(ids + [tok.eos_id, tok.id("9")], skip_special=False).endswith("<eos>")
    with pytest.raises(ValueError, match="unknown token 'x'"):
        tok.encode("1 x 2")


def test_make_task_errors():
    assert make_task("addition", digits=4).answer_len == 6
    with pytest.raises(ValueError, match="Did you mean 'addition'"):
        make_task("additon")
    with pytest.raises(ValueError, match="unknown option"):
        make_task("sorting", digits=3)
    with pytest.raises(ValueError, match="digits"):
        make_task("addition", digits=0)
    with pytest.raises(ValueError, match="length"):
        make_task("sorting", length=1)
