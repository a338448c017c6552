"""Preference data (synthetic pairs, JSON lines) and the DPO-family trainer."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import losses
from purejaxpo.lm.tasks.sequence import AdditionTask
from purejaxpo.lm.config import LMDPOConfig, LMSFTConfig
from purejaxpo.lm.preference import PREFERENCE_LOSSES
from purejaxpo.lm.dpo import (
    SequenceLogProbs,
    kto_data,
    make_dpo_step,
    pair_loss,
    reference_log_probs,
    train_dpo,
)
from purejaxpo.lm.common import init_state
from purejaxpo.lm.model import init_params
from purejaxpo.lm.pairs import Pairs, Unpaired, load_jsonl, synthetic_pairs, write_jsonl

TINY = dict(num_layers=1, width=32, num_heads=2, mlp_ratio=2)


def _policy():
    model = LMSFTConfig(**TINY).model_config()
    return model, init_params(jax.random.PRNGKey(0), model)


@pytest.mark.slow
def test_near_miss_pairs_differ_in_exactly_one_answer_token():
    task = AdditionTask()
    pairs = synthetic_pairs(jax.random.PRNGKey(0), task, 500)
    chosen, rejected = np.asarray(pairs.chosen), np.asarray(pairs.rejected)
    diff = chosen != rejected
    assert np.all(diff.sum(1) == 1)
    assert np.all(chosen[:, -1] == task.tokenizer.eos_id) and not diff[:, -1].any()
    digits = set(task.answer_token_ids)
    assert set(np.unique(rejected[:, :-1])) <= digits
    # Every answer position gets corrupted some of the time.
    assert set(np.flatnonzero(diff.any(0))) == set(range(task.answer_len - 1))
    batch = task.heldout(500)
    assert np.array_equal(synthetic_pairs(jax.random.PRNGKey(1), task, 500, heldout=True).prompts,
                          batch.prompts)


@pytest.mark.slow
def test_policy_rejections_are_wrong_answers():
    task = AdditionTask()
    model, params = _policy()
    pairs = synthetic_pairs(jax.random.PRNGKey(0), task, 200, rejected="policy",
                            policy=(params, model))
    batch = task.sample(jax.random.split(jax.random.PRNGKey(0), 3)[0], 200)
    wrong = task.exact_match(batch._replace(prompts=pairs.prompts), pairs.rejected,
                             pairs.rejected_mask)
    assert np.all(np.asarray(wrong) == 0.0)
    assert np.all(np.asarray(task.exact_match(batch, pairs.chosen, pairs.chosen_mask)) == 1.0)


@pytest.mark.slow
def test_jsonl_round_trip(tmp_path):
    task = AdditionTask()
    pairs = synthetic_pairs(jax.random.PRNGKey(0), task, 20)
    path = tmp_path / "pairs.jsonl"
    write_jsonl(str(path), pairs, task.tokenizer)
    loaded = load_jsonl(str(path), task.tokenizer)
    assert isinstance(loaded, Pairs)
    for a, b in zip(pairs, loaded):
        np.testing.assert_array_equal(a, b)


def test_jsonl_unpaired_and_padding(tmp_path):
    tok = AdditionTask().tokenizer
    path = tmp_path / "kto.jsonl"
    path.write_text('{"prompt": "1 + 2 =", "completion": "3 0", "label": true}\n'
                    '\n'
                    '{"prompt": "12+34=", "completion": "6 4 <eos>", "label": false}\n')
    data = load_jsonl(str(path), tok)
    assert isinstance(data, Unpaired)
    assert data.prompts.shape == (2, 6) and data.completions.shape == (2, 3)
    assert list(np.asarray(data.prompt_valid[0])) == [False, False, True, True, True, True]
    assert list(np.asarray(data.completion_mask[0])) == [True, True, True]
    assert list(np.asarray(data.desirable)) == [True, False]


@pytest.mark.parametrize("lines,message", [
    (['{"prompt": "1+2=", "chosen": "3"}'], r"line 1: missing field 'rejected'"),
    (['{"prompt": "1+2=", "chosen": "3", "rejected": "4"}', '{"prompt": "1+2=", "rejected": "4"}'],
     r"line 2: missing field 'chosen'"),
    (['{"prompt": "1+2=", "chosen": "3", "rejected": "4"}', "not json"], r"line 2: not valid JSON"),
    (['{"prompt": "1+2=", "chosen": "3", "rejected": "x"}'], r"line 1: unknown token 'x'"),
    (['{"prompt": "1+2=", "chosen": 3, "rejected": "4"}'], r"line 1: field 'chosen' must be a string"),
    (['{"prompt": "1+2=", "completion": "3", "label": "yes"}'], r"line 1: field 'label' must be"),
    (['[1, 2]'], r"line 1: expected a JSON object"),
    ([], r"no examples"),
])
def test_jsonl_errors_name_the_line_and_field(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(ValueError, match=message):
        load_jsonl(str(path), AdditionTask().tokenizer)


def test_jsonl_too_long_for_the_model(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"prompt": "1 2 3 4 5 6 7 8 9", "chosen": "1 2 3 4",
                                "rejected": "1"}) + "\n")
    with pytest.raises(ValueError, match="max_len 12"):
        load_jsonl(str(path), AdditionTask().tokenizer, max_len=12)


@pytest.mark.parametrize("loss", [pytest.param(x, marks=pytest.mark.slow) if x == "rpo" else x
                                  for x in PREFERENCE_LOSSES])
def test_every_loss_steps_with_finite_metrics(loss):
    model, params = _policy()
    config = LMDPOConfig(loss=loss, batch_size=8, label_smoothing=0.1 if loss == "robust" else 0.0)
    pairs = synthetic_pairs(jax.random.PRNGKey(0), config.make_task(), 32)
    data = pairs if PREFERENCE_LOSSES[loss].paired else kto_data(pairs)
    ref = reference_log_probs(params, model, data)
    hp = config.hyperparams()
    state, metrics = jax.jit(make_dpo_step(config, model))(
        init_state(jax.random.PRNGKey(1), params, hp), hp, data, ref)
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    changed = any(not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(state.params)))
    assert changed


@pytest.mark.parametrize("loss", ["sigmoid", "kto"])
def test_precomputed_reference_equals_reference_model_in_the_step(loss):
    model, params = _policy()
    ref_params = init_params(jax.random.PRNGKey(7), model)
    pairs = synthetic_pairs(jax.random.PRNGKey(0), AdditionTask(), 32)
    cfg_pre = LMDPOConfig(loss=loss, batch_size=8, precompute_ref=True)
    cfg_live = LMDPOConfig(loss=loss, batch_size=8, precompute_ref=False)
    data = kto_data(pairs) if loss == "kto" else pairs
    hp = cfg_pre.hyperparams()
    state = init_state(jax.random.PRNGKey(1), params, hp)
    pre, m_pre = jax.jit(make_dpo_step(cfg_pre, model))(
        state, hp, data, reference_log_probs(ref_params, model, data))
    live, m_live = jax.jit(make_dpo_step(cfg_live, model))(state, hp, data, ref_params)
    np.testing.assert_allclose(m_pre["loss"], m_live["loss"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(pre.params), jax.tree_util.tree_leaves(live.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", list(PREFERENCE_LOSSES))
def test_every_table_entry_constructs_with_its_defaults(loss):
    spec = PREFERENCE_LOSSES[loss]
    config = LMDPOConfig(loss=loss)
    assert config.loss_spec is spec and config.beta == spec.beta
    assert LMDPOConfig(loss=loss, beta=0.25).beta == 0.25  # an explicit beta wins
    # Every coefficient the loss reads is a sweepable hyperparameter, beta first.
    assert spec.coefficients[0] == "beta"
    assert set(spec.coefficients) <= set(config.hyperparams())
    assert callable(spec.fn) and spec.fn.__module__ == "purejaxpo.losses"
    assert spec.description and "\n" not in spec.description
    assert spec.paired or spec.reference  # the unpaired (KTO) step needs a reference model


# The calls the trainer made before the table (one if-branch per loss), to pin the table's
# inputs and coefficient order.
_EXPLICIT = {
    "rpo": lambda c, r, m, hp, nll: losses.rpo_loss(c, r, nll, hp["beta"], hp["rpo_alpha"],
                                                    hp["label_smoothing"]),
    "sigmoid": lambda c, r, m, hp, nll: losses.dpo_loss(c, r, hp["beta"], hp["label_smoothing"]),
    "ipo": lambda c, r, m, hp, nll: losses.ipo_loss(c, r, hp["beta"]),
    "hinge": lambda c, r, m, hp, nll: losses.hinge_loss(c, r, hp["beta"]),
    "robust": lambda c, r, m, hp, nll: losses.robust_dpo_loss(c, r, hp["beta"],
                                                          hp["label_smoothing"]),
    "orpo": lambda c, r, m, hp, nll: losses.orpo_loss(*m, hp["beta"]),
    "simpo": lambda c, r, m, hp, nll: losses.simpo_loss(*m, hp["beta"], hp["simpo_gamma"]),
}


@pytest.mark.parametrize("loss", [n for n, s in PREFERENCE_LOSSES.items() if s.paired])
def test_pair_loss_calls_the_table_entry_as_before(loss):
    config = LMDPOConfig(loss=loss, label_smoothing=0.2, simpo_gamma=0.3)
    hp = config.hyperparams()
    chosen = SequenceLogProbs(jnp.array([-3.0, -5.0]), jnp.array([3.0, 4.0]))
    rejected = SequenceLogProbs(jnp.array([-4.0, -2.0]), jnp.array([4.0, 2.0]))
    ref_c, ref_r = jnp.array([-3.5, -4.0]), jnp.array([-3.0, -2.5])
    nll = -chosen.total / chosen.length.mean()  # RPO's chosen NLL, normalised as TRL does
    expected = _EXPLICIT[loss](chosen.total - ref_c, rejected.total - ref_r,
                               (chosen.mean, rejected.mean), hp, nll)
    np.testing.assert_array_equal(pair_loss(config, hp, chosen, rejected, ref_c, ref_r),
                                  expected)


def test_rpo_batch_loss_matches_trl_in_float64():
    """The batch mean of the per-example RPO loss is TRL's: mean DPO loss plus ``rpo_alpha``
    times the cross-entropy averaged over all chosen tokens of the batch (so a long chosen
    completion weighs more than a short one), from token log-probs of unequal lengths."""
    rng = np.random.default_rng(0)
    token_c = -rng.uniform(0.01, 3.0, (5, 4))
    token_r = -rng.uniform(0.01, 3.0, (5, 4))
    mask_c = np.arange(4) < np.array([4, 1, 3, 2, 4])[:, None]
    mask_r = np.arange(4) < np.array([2, 4, 4, 1, 3])[:, None]
    ref_c, ref_r = -rng.uniform(1.0, 6.0, 5), -rng.uniform(1.0, 6.0, 5)
    config = LMDPOConfig(loss="rpo", beta=0.3, rpo_alpha=0.7, label_smoothing=0.1)
    hp = config.hyperparams()
    seq = lambda t, m: SequenceLogProbs(jnp.asarray((t * m).sum(1), jnp.float32),  # noqa: E731
                                        jnp.asarray(m.sum(1), jnp.float32))
    out = jax.jit(lambda c, r: pair_loss(config, hp, c, r, jnp.asarray(ref_c, jnp.float32),
                                         jnp.asarray(ref_r, jnp.float32)).mean())(
        seq(token_c, mask_c), seq(token_r, mask_r))
    dpo = []
    for i in range(5):
        h = ((token_c[i] * mask_c[i]).sum() - ref_c[i]) - ((token_r[i] * mask_r[i]).sum() - ref_r[i])
        u = 0.3 * h
        log_sig = lambda x: -np.logaddexp(0.0, -x)  # noqa: E731
        dpo.append(-(1 - 0.1) * log_sig(u) - 0.1 * log_sig(-u))
    nll = -(token_c * mask_c).sum() / mask_c.sum()  # TRL: cross-entropy over all chosen tokens
    np.testing.assert_allclose(out, np.mean(dpo) + 0.7 * nll, rtol=1e-5)


def test_kto_mismatched_pairs_pair_prompts_with_other_completions():
    pairs = synthetic_pairs(jax.random.PRNGKey(0), AdditionTask(), 16)
    data = kto_data(pairs)
    assert len(data.examples) == 32
    assert list(np.asarray(data.examples.desirable)) == [True] * 16 + [False] * 16
    mis = np.asarray(data.mismatched)
    assert np.all(mis != np.arange(32)) and sorted(mis) == list(range(32))


def test_dpo_smoke_learns_to_rank_held_out_pairs():
    """A short DPO run: held-out preference accuracy from 0.5 (policy == reference: all ties) to high.

    Sorting: a near miss (one digit changed) usually breaks the order or the multiset, which a
    tiny random policy learns to spot in a few dozen steps (on addition it needs a policy that
    can add first: see the documented runs)."""
    model = LMSFTConfig(task="sorting", **TINY).model_config()
    params = init_params(jax.random.PRNGKey(0), model)
    config = LMDPOConfig(task="sorting", loss="sigmoid", beta=0.5, steps=60, log_every=30,
                       learning_rate=3e-3, batch_size=32, eval_prompts=64)
    task = config.make_task()
    train = synthetic_pairs(jax.random.PRNGKey(0), task, 2048)
    held = synthetic_pairs(jax.random.PRNGKey(1), task, 256, heldout=True)
    result = train_dpo(config, params, model, train, held, progress=False)
    assert result.before.accuracy == 0.5  # every margin is exactly 0 (a tie) at the start
    assert result.after.accuracy > 0.8
    moved = (result.after.chosen_logp - result.before.chosen_logp) - (
        result.after.rejected_logp - result.before.rejected_logp)
    assert np.mean(moved) > 0  # chosen rises relative to rejected
    assert result.fit.metrics["loss"].shape == (60,)


def test_dpo_config_validation():
    with pytest.raises(ValueError, match="loss"):
        LMDPOConfig(loss="dpo")
    with pytest.raises(ValueError, match="label_smoothing"):
        LMDPOConfig(label_smoothing=0.5)
    with pytest.raises(ValueError, match="rejected"):
        LMDPOConfig(rejected="random")
    assert LMDPOConfig(loss="simpo").beta == 2.0
    with pytest.raises(ValueError, match="needs pairs"):
        model, params = _policy()
        data = Unpaired(jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 3), bool),
                        jnp.zeros((2, 2), jnp.int32), jnp.ones((2, 2), bool), jnp.ones(2, bool))
        train_dpo(LMDPOConfig(), params, model, data, None)
