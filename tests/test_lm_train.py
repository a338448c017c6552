"""SFT and GRPO trainers: one compiled step, vmap over seeds and hyperparameters, the zero-spread
and beta = 0 special cases, configs, checkpoints."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.lm.checkpoint import load_policy, save_policy
from purejaxpo.lm.common import init_state
from purejaxpo.lm.config import LMGRPOConfig, LMSFTConfig
from purejaxpo.lm.grpo import grpo_program, make_grpo_step
from purejaxpo.lm.model import init_params
from purejaxpo.lm.sft import train_sft

TINY = dict(num_layers=1, width=32, num_heads=2, mlp_ratio=2)


def _tiny_policy(task="addition"):
    cfg = LMSFTConfig(task=task, **TINY)
    model = cfg.model_config()
    return cfg, model, init_params(jax.random.PRNGKey(0), model)


def _run(program, steps, *, seed):
    """``steps`` steps of a trainer's program in one compiled ``run``, from ``PRNGKey(seed)``:
    the final state and NumPy metrics ``[steps]``."""
    state, metrics = jax.jit(lambda key: program.run(program.init(key), steps))(
        jax.random.PRNGKey(seed))
    return state, jax.tree_util.tree_map(np.asarray, metrics)


def _grpo(**kw):
    base = dict(prompts_per_step=4, group_size=4, steps=3, log_every=3)
    base.update(kw)
    return LMGRPOConfig(**base)


@pytest.mark.slow
def test_sft_reduces_the_loss():
    cfg = LMSFTConfig(task="sorting", steps=60, log_every=30, eval_prompts=16,
                    learning_rate=3e-3, **TINY)
    result = train_sft(cfg, progress=False)
    loss = result.metrics["loss"]
    assert loss.shape == (60,)
    assert loss[-10:].mean() < 0.75 * loss[:5].mean()
    assert [s for s, _ in result.curve] == [0, 30, 60]


def _stack(tree, n):
    return jax.tree_util.tree_map(lambda x: jnp.stack([x] * n), tree)


@pytest.mark.slow
def test_grpo_step_vmaps_over_seeds_with_one_trace():
    _, model, params = _tiny_policy()
    config = _grpo(beta=0.04)
    task = config.make_task()
    hp = config.hyperparams()
    step = chex.assert_max_traces(make_grpo_step(config, model, task), n=1)
    states = jax.vmap(lambda k: init_state(k, params, hp))(jax.random.split(jax.random.PRNGKey(0), 3))
    run = jax.jit(jax.vmap(step, in_axes=(0, None, None)))
    states, metrics = run(states, hp, params)
    states, metrics = run(states, hp, params)
    assert metrics["reward"].shape == (3,)
    # Different seeds, different samples.
    assert len(set(np.asarray(metrics["completion_length"]).round(5))) > 1
    for name in ("reward/correct", "reward/digits", "exact_match", "zero_spread_fraction", "kl",
                 "clip_fraction", "completion_length", "entropy", "loss"):
        assert np.all(np.isfinite(np.asarray(metrics[name]))), name


@pytest.mark.slow
def test_grpo_hyperparameter_sweep_equals_single_runs():
    _, model, params = _tiny_policy()
    config = _grpo(num_epochs=2)
    task = config.make_task()
    step = make_grpo_step(config, model, task)
    lrs = jnp.array([1e-4, 3e-3], jnp.float32)
    hp = config.hyperparams()
    batched = {**{k: jnp.stack([v, v]) for k, v in hp.items()}, "learning_rate": lrs}
    state = init_state(jax.random.PRNGKey(1), params, hp)
    swept, _ = jax.jit(jax.vmap(step, in_axes=(None, 0, None)))(state, batched, None)
    for i, lr in enumerate(lrs):
        single, _ = jax.jit(step)(state, {**hp, "learning_rate": lr}, None)
        for a, b in zip(jax.tree_util.tree_leaves(single.params),
                        jax.tree_util.tree_leaves(swept.params)):
            np.testing.assert_allclose(a, b[i], rtol=2e-5, atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("loss, estimator", [
    ("grpo", "grpo"), ("dapo", "grpo"), ("dr_grpo", "grpo"), ("gspo", "grpo"), ("grpo", "rloo")])
def test_identical_rewards_leave_the_policy_unchanged(loss, estimator):
    """Every group tied: zero advantage, zero gradient, Adam moves nothing (beta = 0)."""
    _, model, params = _tiny_policy()
    config = _grpo(loss=loss, estimator=estimator, rewards=(("constant", 0.1),), num_epochs=2,
                   num_minibatches=2)
    constant = lambda batch, tokens, mask: jnp.full(tokens.shape[0], 0.1)  # noqa: E731
    state, metrics = _run(grpo_program(config, params, model, config.make_task(),
                                       extra_rewards={"constant": constant}), 3, seed=2)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(state.params)):
        assert np.array_equal(a, b)
    assert np.all(metrics["zero_spread_fraction"] == 1.0)


@pytest.mark.slow
def test_dynamic_sampling_filters_zero_spread_groups():
    """DAPO: groups with tied rewards drop out of the loss; the fraction is reported."""
    _, model, params = _tiny_policy()
    config = _grpo(loss="dapo", group_size=2, prompts_per_step=8, rewards=(("half", 1.0),))

    def half(batch, tokens, mask):  # groups 0-3 tied, groups 4-7 differ
        i = jnp.arange(tokens.shape[0])
        return jnp.where(i < 8, 1.0, (i % 2).astype(jnp.float32))

    step = make_grpo_step(config, model, config.make_task(), {"half": half})
    hp = config.hyperparams()
    _, metrics = jax.jit(step)(init_state(jax.random.PRNGKey(3), params, hp), hp, None)
    assert float(metrics["zero_spread_fraction"]) == 0.5


def test_beta_zero_never_runs_the_reference_model():
    _, model, params = _tiny_policy()
    config = _grpo(beta=0.0)
    step = make_grpo_step(config, model, config.make_task())
    hp = config.hyperparams()
    jaxpr = jax.make_jaxpr(step)(init_state(jax.random.PRNGKey(0), params, hp), hp, None)
    with_kl = _grpo(beta=0.1)
    jaxpr_kl = jax.make_jaxpr(make_grpo_step(with_kl, model, with_kl.make_task()))(
        init_state(jax.random.PRNGKey(0), params, hp), with_kl.hyperparams(), params)
    # The reference pass is one more forward pass of the transformer: many more equations.
    assert len(str(jaxpr)) < len(str(jaxpr_kl))


@pytest.mark.parametrize("estimator", [
    "rloo", pytest.param("reinforce_pp", marks=pytest.mark.slow)])
def test_estimators_train_with_finite_metrics(estimator):
    """Two steps of each estimator on the tiny model: finite metrics, the policy moves; for
    REINFORCE++ the per-token KL to the reference starts at exactly 0 and then grows."""
    _, model, params = _tiny_policy()
    config = _grpo(estimator=estimator, learning_rate=3e-3, kl_coef=0.05)
    state, metrics = _run(grpo_program(config, params, model, config.make_task()), 2, seed=5)
    for name, value in metrics.items():
        assert value.shape == (2,) and np.all(np.isfinite(value)), name
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(state.params)))
    if estimator == "reinforce_pp":
        assert metrics["token_kl"][0] == 0.0 and metrics["token_kl"][1] != 0.0
        assert np.all(metrics["kl"] == 0.0)  # beta = 0: no k3 term in the loss
    else:
        assert "token_kl" not in metrics


def test_reference_pass_only_where_needed():
    """beta = 0: rloo traces with no reference parameters at all (no reference pass, as grpo
    in the test above); reinforce_pp needs them for its per-token KL, and its step is one
    forward pass longer."""
    _, model, params = _tiny_policy()
    sizes = {}
    for estimator in ("rloo", "reinforce_pp"):
        config = _grpo(estimator=estimator, beta=0.0)
        assert config.use_reference == (estimator == "reinforce_pp")
        step = make_grpo_step(config, model, config.make_task())
        hp = config.hyperparams()
        state = init_state(jax.random.PRNGKey(0), params, hp)
        if estimator == "reinforce_pp":
            with pytest.raises(ValueError, match="ref_params=None.*reinforce_pp"):
                jax.make_jaxpr(step)(state, hp, None)
        sizes[estimator] = len(str(jax.make_jaxpr(step)(
            state, hp, params if config.use_reference else None)))
    assert sizes["rloo"] < sizes["reinforce_pp"]


@pytest.mark.slow
def test_kl_to_reference_grows_from_zero():
    _, model, params = _tiny_policy()
    config = _grpo(beta=0.04, learning_rate=3e-3, steps=4)
    _, metrics = _run(grpo_program(config, params, model, config.make_task()), 4, seed=4)
    assert metrics["kl"][0] == pytest.approx(0.0, abs=1e-6)  # first step: policy == reference
    assert metrics["kl"][-1] > 0


def test_configs_validate_before_compiling():
    with pytest.raises(ValueError, match="loss"):
        LMGRPOConfig(loss="ppo")
    with pytest.raises(ValueError, match=r"estimator='ppo'.*\['grpo', 'rloo', 'reinforce_pp'\]"):
        LMGRPOConfig(estimator="ppo")
    with pytest.raises(ValueError, match="group_size=1.*rloo"):
        LMGRPOConfig(estimator="rloo", group_size=1)
    LMGRPOConfig(estimator="grpo", group_size=1)  # a group of one: zero advantage, allowed
    with pytest.raises(ValueError, match="kl_coef"):
        LMGRPOConfig(kl_coef=-0.1)
    with pytest.raises(ValueError, match="num_minibatches"):
        LMGRPOConfig(prompts_per_step=3, group_size=3, num_minibatches=2)
    with pytest.raises(ValueError, match="clip_eps"):
        LMGRPOConfig(clip_eps=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        LMGRPOConfig(max_new_tokens=2)
    with pytest.raises(ValueError, match="task"):
        LMGRPOConfig(task="multiplication")
    with pytest.raises(ValueError, match="max_len"):
        LMSFTConfig(max_len=8)
    with pytest.raises(ValueError, match="width must be divisible"):
        LMSFTConfig(width=30)
    _, model, _ = _tiny_policy()
    bad = LMGRPOConfig(rewards=(("corect", 1.0),))
    with pytest.raises(ValueError, match="unknown reward"):
        make_grpo_step(bad, model, bad.make_task())


def test_estimator_fields():
    config = LMGRPOConfig()
    assert config.estimator == "grpo" and not config.use_reference
    assert "kl_coef" in config.hyperparams()  # sweepable
    assert LMGRPOConfig(estimator="reinforce_pp").use_reference
    assert LMGRPOConfig(estimator="rloo", beta=0.1).use_reference


def test_policy_checkpoint_round_trip(tmp_path):
    cfg, model, params = _tiny_policy("sorting")
    save_policy(str(tmp_path / "p"), params, model, task="sorting", task_args={"length": 6},
                meta={"note": "x"})
    policy = load_policy(str(tmp_path / "p"))
    assert policy.model == model and policy.task == "sorting"
    assert policy.task_args == {"length": 6} and policy.meta == {"note": "x"}
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(policy.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not a saved policy"):
        load_policy(str(tmp_path))


def test_shared_names_are_defined_once():
    from purejaxpo import advantages
    from purejaxpo.lm import checkpoint, config, model

    assert config.ADVANTAGE_SCALES is advantages.ADVANTAGE_SCALES
    assert checkpoint.MODEL_KINDS is model.MODEL_KINDS
    with pytest.raises(ValueError, match="kind"):
        init_params(jax.random.PRNGKey(0), _tiny_policy()[1], "critic")
