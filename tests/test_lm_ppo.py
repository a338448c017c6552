"""PPO with a value head on a sequence policy: token-level GAE and per-token rewards against
float64 NumPy loops (with and without jit), the critic's values, the trainer's step and
program, config validation. (The command line: test_lm_cli.py.)"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import advantages
from purejaxpo.lm.config import LMPPOConfig, LMSFTConfig
from purejaxpo.lm.model import init_params
from purejaxpo.lm.model import Transformer
from purejaxpo.lm.ppo import completion_values, init_critic, policy_and_values, ppo_program
from purejaxpo.lm.sampling import completion_log_probs

TINY = dict(num_layers=1, width=32, num_heads=2, mlp_ratio=2)


def _reference_token_gae(rewards, kl, values, mask, kl_coef, gamma, lam):
    """Plain loops in float64: each row an episode over its valid tokens (positions that are
    not valid between them, tool results, are no steps of the episode)."""
    b, n = mask.shape
    adv = np.zeros((b, n))
    for i in range(b):
        steps = [t for t in range(n) if mask[i, t]]
        r = [-kl_coef * kl[i, t] for t in steps]
        if steps:
            r[-1] += rewards[i]
        running = 0.0
        for j in reversed(range(len(steps))):
            next_v = values[i, steps[j + 1]] if j + 1 < len(steps) else 0.0
            delta = r[j] + gamma * next_v - values[i, steps[j]]
            running = delta + gamma * lam * running
            adv[i, steps[j]] = running
    targets = np.where(mask, adv + values, 0.0)
    return adv, targets


class TokenGAETest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_numpy_loops(self):
        rng = np.random.default_rng(0)
        b, n = 5, 7
        lengths = np.array([7, 3, 0, 1, 5])
        mask = np.arange(n)[None, :] < lengths[:, None]
        rewards = rng.normal(size=b)
        kl = np.where(mask, rng.normal(size=(b, n)), np.nan)  # junk at padding is ignored
        values = np.where(mask, rng.normal(size=(b, n)), np.inf)
        for kl_coef, gamma, lam in ((0.1, 1.0, 0.95), (0.0, 0.9, 1.0), (0.5, 0.99, 0.0)):
            fn = self.variant(advantages.token_gae)
            adv, targets = fn(jnp.asarray(rewards, jnp.float32), jnp.asarray(kl, jnp.float32),
                              jnp.asarray(values, jnp.float32), jnp.asarray(mask), kl_coef,
                              gamma, lam)
            want_adv, want_targets = _reference_token_gae(
                rewards, np.nan_to_num(kl), np.where(mask, values, 0.0), mask, kl_coef, gamma,
                lam)
            np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(targets, want_targets, rtol=1e-5, atol=1e-5)
            assert np.all(np.asarray(adv)[~mask] == 0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_tool_results_inside_a_completion_are_skipped(self):
        rng = np.random.default_rng(1)
        b, n = 4, 9
        mask = rng.random((b, n)) < 0.6  # holes: tokens a tool wrote
        mask[0], mask[1] = False, np.arange(n) < 4  # an empty row, a prefix row
        rewards = rng.normal(size=b)
        kl = np.where(mask, rng.normal(size=(b, n)), np.nan)
        values = np.where(mask, rng.normal(size=(b, n)), np.inf)
        adv, targets = self.variant(advantages.token_gae)(
            jnp.asarray(rewards, jnp.float32), jnp.asarray(kl, jnp.float32),
            jnp.asarray(values, jnp.float32), jnp.asarray(mask), 0.2, 0.9, 0.8)
        want_adv, want_targets = _reference_token_gae(
            rewards, np.nan_to_num(kl), np.where(mask, values, 0.0), mask, 0.2, 0.9, 0.8)
        np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(targets, want_targets, rtol=1e-5, atol=1e-5)
        assert np.all(np.asarray(adv)[~mask] == 0)

    def test_per_token_rewards_sum_to_the_reward_minus_the_kl(self):
        mask = jnp.asarray([[True, True, False], [False, False, False]])
        kl = jnp.asarray([[0.5, -0.2, 9.0], [1.0, 1.0, 1.0]])
        r, is_last = advantages.per_token_rewards(jnp.asarray([2.0, 3.0]), kl, mask, 0.1)
        np.testing.assert_allclose(r, [[-0.05, 2.02, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)
        np.testing.assert_array_equal(is_last, [[False, True, False], [False, False, False]])


def _tiny():
    model = LMSFTConfig(**TINY).model_config()
    return model, init_params(jax.random.PRNGKey(0), model)


def test_critic_starts_from_the_policy_trunk_and_reads_each_prefix():
    model, params = _tiny()
    critic = init_critic(jax.random.PRNGKey(1), params, model)
    assert critic["trunk"] is params and critic["value"]["kernel"].shape == (model.width, 1)
    task = LMPPOConfig().make_task()
    batch = task.sample(jax.random.PRNGKey(2), 3)
    tokens = batch.answers
    mask = batch.answer_mask.at[0, 2:].set(False)
    v = completion_values(critic, model, batch.prompts, batch.prompt_valid, tokens, mask)
    assert v.shape == tokens.shape and np.all(np.asarray(v)[~np.asarray(mask)] == 0)
    # V before token t depends on tokens < t only: changing the last token leaves the rest.
    changed = tokens.at[:, -1].set((tokens[:, -1] + 1) % model.vocab_size)
    v2 = completion_values(critic, model, batch.prompts, batch.prompt_valid, changed, mask)
    np.testing.assert_allclose(v[:, :-1], v2[:, :-1], rtol=1e-5, atol=1e-6)


def _completions(model):
    task = LMPPOConfig().make_task()
    batch = task.sample(jax.random.PRNGKey(2), 3)
    return {"prompts": batch.prompts, "prompt_valid": batch.prompt_valid,
            "tokens": batch.answers, "mask": batch.answer_mask.at[0, 2:].set(False)}


def test_shared_critic_reads_the_policy_trunk_in_the_same_pass():
    model, params = _tiny()
    critic = init_critic(jax.random.PRNGKey(1), params, model, "shared")
    assert set(critic) == {"value"} and critic["value"]["kernel"].shape == (model.width, 1)
    both = {"policy": params, "critic": critic}
    data = _completions(model)
    (log_probs, entropy), values = jax.jit(lambda b, d: policy_and_values(
        b, model, "shared", d, 0.7, with_entropy=True))(both, data)
    want = jax.jit(lambda p, d: completion_log_probs(
        p, model, d["prompts"], d["prompt_valid"], d["tokens"], d["mask"], 0.7))(params, data)
    np.testing.assert_allclose(log_probs, want, rtol=1e-5, atol=1e-5)
    # Values: the head on the trunk's final hidden state before each completion token.
    full = jnp.concatenate([data["prompts"], data["tokens"]], 1)
    valid = jnp.concatenate([data["prompt_valid"], data["mask"]], 1)
    hidden, _ = jax.jit(lambda p: Transformer(model).apply({"params": p}, full, valid,
                                                           return_hidden=True))(params)
    p = data["prompts"].shape[1]
    head = critic["value"]
    manual = (hidden[:, p - 1:-1] @ head["kernel"])[..., 0] + head["bias"][0]
    mask = np.asarray(data["mask"])
    np.testing.assert_allclose(np.asarray(values)[mask], np.asarray(manual)[mask], rtol=1e-5,
                               atol=1e-6)
    assert np.all(np.asarray(values)[~mask] == 0) and entropy.shape == log_probs.shape


@pytest.mark.parametrize("stop_gradient", [False, True])
def test_shared_critic_stop_gradient_keeps_the_value_loss_out_of_the_trunk(stop_gradient):
    model, params = _tiny()
    both = {"policy": params, "critic": init_critic(jax.random.PRNGKey(1), params, model,
                                                    "shared")}
    data = _completions(model)

    def value_sum(p):
        return jnp.sum(policy_and_values(p, model, "shared", data, 1.0,
                                         stop_gradient=stop_gradient)[1] ** 2)

    grads = jax.jit(jax.grad(value_sum))(both)
    trunk = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads["policy"]))
    head = float(jnp.max(jnp.abs(grads["critic"]["value"]["kernel"])))
    assert head > 0
    assert (trunk == 0.0) == stop_gradient


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ppo_program_with_a_shared_critic_trains():
    model, params = _tiny()
    config = LMPPOConfig(prompts_per_step=4, group_size=2, steps=2, critic="shared",
                         critic_stop_gradient=True)
    program = ppo_program(config, params, model, config.make_task())
    result = jax.jit(program.train)(jax.random.PRNGKey(0))
    assert set(result.params["critic"]) == {"value"}
    for name in ("loss", "value_loss", "explained_variance"):
        assert np.all(np.isfinite(result.metrics[name])), name
    assert not np.allclose(result.params["critic"]["value"]["kernel"],
                           init_critic(jax.random.PRNGKey(0), params, model,
                                       "shared")["value"]["kernel"])


@pytest.mark.timeout(300)
def test_ppo_program_trains_policy_and_critic_and_vmaps_over_seeds():
    model, params = _tiny()
    config = LMPPOConfig(prompts_per_step=4, group_size=2, steps=3)
    program = ppo_program(config, params, model, config.make_task())
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    result = jax.jit(jax.vmap(program.train))(keys)
    assert set(result.params) == {"policy", "critic"}
    for name in ("loss", "policy_loss", "value_loss", "token_kl", "explained_variance"):
        assert result.metrics[name].shape == (2, 3) and np.all(np.isfinite(result.metrics[name]))
    policy0 = jax.tree_util.tree_map(lambda x: x[0], result.params["policy"])
    assert not np.allclose(jax.tree_util.tree_leaves(policy0)[0],
                           jax.tree_util.tree_leaves(params)[0])
    # The reference (the starting policy) is in the state: kl_coef > 0 by default.
    state = jax.jit(program.init)(keys[0])
    assert state.ref is not None and set(state.params) == {"policy", "critic"}
    no_ref = ppo_program(config.replace(kl_coef=0.0), params, model, config.make_task())
    assert jax.jit(no_ref.init)(keys[0]).ref is None


@pytest.mark.parametrize("overrides, message", [
    (dict(estimator="rloo"), "estimator='rloo' is invalid: is not used by lm ppo"),
    (dict(loss="dapo"), "filter_zero_spread=True is invalid: must be false for lm ppo"),
    (dict(gamma=1.5), "gamma=1.5 is invalid"),
    (dict(value_clip=0.0), "value_clip=0.0 is invalid"),
    (dict(critic="trunk"), "critic='trunk' is invalid: must be one of"),
    (dict(critic_stop_gradient=True), "critic_stop_gradient=True is invalid: needs critic"),
])
def test_config_validation_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        LMPPOConfig(**overrides)


def test_ppo_sweepable_settings():
    hp = LMPPOConfig().hyperparams()
    assert {"gamma", "gae_lambda", "vf_coef", "value_clip", "kl_coef", "learning_rate"} <= set(hp)
