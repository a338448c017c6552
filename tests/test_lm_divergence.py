"""Divergence of the LM trainers is reported, never silent: the per-step non-finite flag of the
shared loop, the first diverged step (exact across chunks), NaN scores after it, and the
JSON-ready summary. (The command-line side is in test_lm_cli.py.)"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.lm.common import LMState, fit, init_state, lm_program, optimizer
from purejaxpo.metrics import nonfinite
from purejaxpo.settings import json_safe
from purejaxpo.lm.config import LMDPOConfig, LMSFTConfig
from purejaxpo.lm.dpo import train_dpo
from purejaxpo.lm.model import init_params
from purejaxpo.lm.pairs import synthetic_pairs
from purejaxpo.lm.sft import train_sft
from purejaxpo.metrics import NONFINITE, divergence
from purejaxpo.update import gradient_step

TINY = dict(num_layers=1, width=32, num_heads=2, mlp_ratio=2)
HP = {"learning_rate": jnp.float32(1e-2), "max_grad_norm": jnp.float32(1.0)}


def _quadratic_step(poison_params_at=None, poison_loss_at=None):
    """A toy trainer step (Adam on ``sum(w^2)``) that turns the parameters (or only the
    reported loss) NaN at the given step (counting from 1)."""

    def loss_fn(params, _):
        loss = jnp.sum(params["w"] ** 2)
        return loss, {"loss": loss}

    def step(state: LMState, hyperparams):
        (params, opt_state), metrics = gradient_step(loss_fn, optimizer(hyperparams))(
            (state.params, state.opt_state), None)
        number = state.step + 1
        if poison_params_at is not None:
            params = {"w": jnp.where(number == poison_params_at, jnp.nan, params["w"])}
        if poison_loss_at is not None:
            metrics["loss"] = jnp.where(number == poison_loss_at, jnp.nan, metrics["loss"])
        return state._replace(params=params, opt_state=opt_state, step=number), metrics

    return step


def _program(step, num_steps):
    return lm_program(step, num_steps=num_steps, hyperparams=HP,
                      start=lambda key: ({"w": jnp.ones(3)}, key))


def _fit(step, num_steps, chunk):
    """The metrics (``[num_steps]`` each) and final state of ``step`` run by :func:`fit` in
    chunks of ``chunk`` steps, as the trainers run."""
    result = fit(_program(step, num_steps), jax.random.PRNGKey(0), evaluate=lambda p: 0.0,
                 chunk=chunk, progress=False)
    return result.metrics, result.state


@pytest.mark.parametrize("at", [1, 3, 4, 7])
def test_first_nonfinite_step_is_exact_across_chunks(at):
    metrics, _ = _fit(_quadratic_step(poison_params_at=at), 7, chunk=2)
    flags = metrics[NONFINITE]
    assert flags.dtype == np.float32 and flags.shape == (7,)
    # NaN parameters stay NaN (Adam carries them), so every step from `at` on is flagged.
    np.testing.assert_array_equal(flags, np.arange(1, 8) >= at)
    # The environment trainers' reader agrees (it counts from 0).
    diverged, first = divergence(metrics)
    assert bool(diverged) and int(first) == at - 1


def test_a_nonfinite_loss_alone_is_flagged():
    metrics, _ = _fit(_quadratic_step(poison_loss_at=2), 4, chunk=4)
    np.testing.assert_array_equal(metrics[NONFINITE], [0.0, 1.0, 0.0, 0.0])


def test_fit_reports_the_step_and_nan_scores_after_it():
    evaluated = []

    def evaluate(params):
        evaluated.append(1)
        return 0.25

    result = fit(_program(_quadratic_step(poison_params_at=3), 6), jax.random.PRNGKey(0),
                 evaluate=evaluate, chunk=2, progress=False)
    assert result.diverged and result.diverged_at_step == 3
    # Scores from the first chunk holding the diverged step on are NaN, and not computed.
    assert [s for s, _ in result.curve] == [0, 2, 4, 6]
    assert [v for _, v in result.curve[:2]] == [0.25, 0.25]
    assert all(math.isnan(v) for _, v in result.curve[2:])
    assert len(evaluated) == 2
    summary = result.summary()
    assert summary["diverged"] is True and summary["diverged_at_step"] == 3
    assert summary["exact_match_before"] == 0.25 and summary["exact_match_after"] is None
    json.dumps(summary, allow_nan=False)  # strict JSON: no NaN anywhere


def test_a_finite_run_is_not_diverged():
    result = fit(_program(_quadratic_step(), 4), jax.random.PRNGKey(0), evaluate=lambda p: 0.5,
                 chunk=2, progress=False)
    assert not result.diverged and result.diverged_at_step is None
    assert not result.metrics[NONFINITE].any()
    summary = result.summary()
    assert summary["diverged"] is False and summary["diverged_at_step"] is None


@pytest.mark.parametrize("make_loss", [
    lambda w: jnp.sum(jnp.sqrt(0.0 * w)),  # finite loss (0), NaN gradient (inf * 0)
    lambda w: jnp.sum(jnp.sqrt(w - 1.0)),  # finite loss (0 at w = 1), infinite gradient
])
def test_nonfinite_gradients_make_the_parameters_nonfinite(make_loss):
    """The check reads the loss and the parameters only: a finite loss with non-finite
    gradients must still show, through global-norm clipping and Adam."""

    def loss_fn(params, _):
        loss = make_loss(params["w"])
        return loss, {"loss": loss}

    state = init_state(jax.random.PRNGKey(0), {"w": jnp.ones(3)}, HP)
    grads = jax.grad(lambda p: loss_fn(p, None)[0])(state.params)
    assert not np.isfinite(np.asarray(grads["w"])).all()
    (params, _), aux = gradient_step(loss_fn, optimizer(HP))(
        (state.params, state.opt_state), None)
    assert np.isfinite(float(aux["loss"]))
    assert float(nonfinite(params, aux["loss"])) == 1.0
    assert float(nonfinite(state.params, aux["loss"])) == 0.0


def test_json_safe():
    out = json_safe({"a": float("nan"), "b": [np.float32(0.5), float("inf")],
                     "c": (np.int32(3), None, "x"), "d": True})
    assert out == {"a": None, "b": [0.5, None], "c": [3, None, "x"], "d": True}
    assert type(out["c"][0]) is int


def test_sft_with_a_huge_learning_rate_diverges():
    config = LMSFTConfig(steps=6, log_every=3, eval_prompts=16, batch_size=8,
                       learning_rate=1e30, **TINY)
    result = train_sft(config, progress=False)
    step = result.diverged_at_step
    assert result.diverged and isinstance(step, int) and 1 <= step <= 6
    loss = result.metrics["loss"]
    assert np.isfinite(loss[:step - 1]).all()  # every step before it was fine
    assert result.metrics[NONFINITE][step - 1:].all()
    assert not np.isfinite(loss[-1])
    assert math.isnan(result.exact_match_after)
    assert result.exact_match_before == result.curve[0][1] and not math.isnan(
        result.exact_match_before)


def test_normal_sft_run_is_not_diverged():
    config = LMSFTConfig(steps=4, log_every=2, eval_prompts=16, batch_size=8, **TINY)
    result = train_sft(config, progress=False)
    assert not result.diverged and result.diverged_at_step is None
    assert result.summary()["diverged"] is False


@pytest.mark.slow
def test_dpo_divergence_makes_preference_accuracy_nan():
    model = LMSFTConfig(**TINY).model_config()
    params = init_params(jax.random.PRNGKey(0), model)
    config = LMDPOConfig(steps=4, log_every=2, eval_prompts=16, batch_size=8, num_pairs=32,
                       eval_pairs=16, learning_rate=1e30, rejected="near_miss")
    task = config.make_task()
    train = synthetic_pairs(jax.random.PRNGKey(0), task, 32)
    held = synthetic_pairs(jax.random.PRNGKey(1), task, 16, heldout=True)
    result = train_dpo(config, params, model, train, held, progress=False)
    assert result.fit.diverged
    assert result.before.accuracy == 0.5
    assert math.isnan(result.after.accuracy)
    summary = result.preference_summary()
    assert summary["pref_accuracy"] is None and summary["pref_accuracy_before"] == 0.5


def test_a_chunked_run_traces_the_step_once_per_chunk_length_and_is_exact():
    """:func:`fit` compiles each chunk length once (the step is traced once for chunks of one
    length, twice with a shorter last chunk), and chunks continue exactly as one longer run."""
    traces = []
    inner = _quadratic_step()

    def step(state, hyperparams):
        traces.append(1)  # runs only while jax traces the step
        return inner(state, hyperparams)

    chunked, chunked_state = _fit(step, 8, chunk=2)
    assert len(traces) == 1
    _fit(step, 7, chunk=2)  # chunks of 2, 2, 2 and 1: a second length, a new compile
    assert len(traces) == 1 + 2
    whole, whole_state = _fit(inner, 8, chunk=8)
    np.testing.assert_array_equal(chunked["loss"], whole["loss"])
    np.testing.assert_array_equal(chunked_state.params["w"], whole_state.params["w"])
