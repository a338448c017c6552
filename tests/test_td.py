"""The off-policy math (``purejaxpo/td.py``) against float64 NumPy references, with and
without ``jit``."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import td
from purejaxpo.networks import DeterministicAction, SquashedGaussian


def _ref_bellman(reward, next_value, terminated, gamma):
    out = np.zeros(len(reward))
    for i in range(len(reward)):
        out[i] = reward[i] + (0.0 if terminated[i] else gamma * next_value[i])
    return out


class BellmanTargetTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_termination_cuts_truncation_bootstraps(self):
        rng = np.random.default_rng(0)
        reward = rng.normal(size=64)
        next_value = rng.normal(size=64) * 10
        terminated = rng.random(64) < 0.3
        truncated = ~terminated & (rng.random(64) < 0.3)  # must not change the target
        del truncated
        got = self.variant(td.bellman_target)(jnp.asarray(reward, jnp.float32),
                                              jnp.asarray(next_value, jnp.float32),
                                              jnp.asarray(terminated), 0.97)
        np.testing.assert_allclose(got, _ref_bellman(reward, next_value, terminated, 0.97),
                                   rtol=1e-5, atol=1e-5)
        # A terminal step's target is its reward alone; a truncated one's bootstraps.
        t = self.variant(td.bellman_target)(jnp.ones(2), jnp.full(2, 5.0),
                                            jnp.array([True, False]), 0.5)
        np.testing.assert_allclose(t, [1.0, 3.5])

    @chex.variants(with_jit=True, without_jit=True)
    def test_polyak(self):
        rng = np.random.default_rng(1)
        target = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
        online = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
        got = self.variant(td.polyak)(jax.tree_util.tree_map(jnp.asarray, target),
                                      jax.tree_util.tree_map(jnp.asarray, online), 0.02)
        for k in target:
            np.testing.assert_allclose(got[k], 0.98 * target[k] + 0.02 * online[k], rtol=1e-5)
        same = self.variant(td.polyak)(jnp.ones(3), jnp.zeros(3), 1.0)
        np.testing.assert_array_equal(same, np.zeros(3))


def _ref_squashed_log_prob(mean, log_std, u):
    """log N(u; mean, std) - sum log(1 - tanh(u)^2), directly in float64."""
    std = np.exp(log_std)
    gauss = np.sum(-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi), -1)
    return gauss - np.sum(np.log(1.0 - np.tanh(u) ** 2), -1)


class SquashedGaussianTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_log_prob_has_the_tanh_correction(self):
        rng = np.random.default_rng(2)
        mean = rng.normal(size=(32, 3))
        log_std = rng.uniform(-2, 1, size=(32, 3))
        u = mean + np.exp(log_std) * rng.normal(size=(32, 3))
        got = self.variant(td.squashed_gaussian_log_prob)(
            *(jnp.asarray(x, jnp.float32) for x in (mean, log_std, u)))
        np.testing.assert_allclose(got, _ref_squashed_log_prob(mean, log_std, u), rtol=1e-4,
                                   atol=1e-4)

    def test_log_det_stays_finite_where_tanh_saturates(self):
        u = jnp.array([[-30.0, 0.0, 30.0]])
        got = td.tanh_log_det(u)
        # log(1 - tanh(u)^2) = log(4) - 2|u| - 2 log(1 + exp(-2|u|)): exact for large |u|.
        expected = 2 * (np.log(4.0) - 60.0) + 0.0
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, [expected], rtol=1e-6)

    def test_density_integrates_to_one(self):
        # The squashed density over (-1, 1), numerically: 1 within the quadrature error.
        a = np.linspace(-1 + 1e-7, 1 - 1e-7, 200_001)
        dist = SquashedGaussian(jnp.full((a.size, 1), 0.3), jnp.full((a.size, 1), -0.5))
        density = np.exp(np.asarray(dist.log_prob(jnp.asarray(a[:, None], jnp.float32)),
                                    np.float64))
        assert abs(np.trapezoid(density, a) - 1.0) < 2e-3

    def test_sample_is_tanh_of_a_gaussian_and_its_log_prob_matches(self):
        mean, log_std = jnp.array([[0.2, -0.4]]), jnp.array([[-1.0, 0.0]])
        dist = SquashedGaussian(mean, log_std)
        keys = jax.random.split(jax.random.PRNGKey(0), 4096)
        actions, logps = jax.vmap(dist.sample_and_log_prob)(keys)
        assert np.all(np.abs(actions) < 1)
        u = np.arctanh(np.asarray(actions, np.float64))
        np.testing.assert_allclose(u.mean(axis=(0, 1)), [0.2, -0.4], atol=0.05)
        np.testing.assert_allclose(u.std(axis=(0, 1)), np.exp([-1.0, 0.0]), rtol=0.05)
        np.testing.assert_allclose(
            logps[:, 0], _ref_squashed_log_prob(np.asarray(mean, np.float64),
                                                np.asarray(log_std, np.float64), u[:, 0]),
            rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(dist.mode(), np.tanh(mean), rtol=1e-6)

    def test_deterministic_action(self):
        d = DeterministicAction(jnp.array([[0.5, -0.2]]))
        a, logp = d.sample_and_log_prob(jax.random.PRNGKey(0))
        np.testing.assert_array_equal(a, d.mode())
        np.testing.assert_array_equal(logp, [0.0])


class TemperatureTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_gradient_lowers_alpha_above_the_target_entropy(self):
        grad = self.variant(jax.grad(td.temperature_loss))
        # Entropy (-mean log_prob) 2.0 above a target of -1: descending lowers log_alpha.
        high = grad(jnp.float32(0.0), jnp.full(8, -2.0), -1.0)
        low = grad(jnp.float32(0.0), jnp.full(8, 3.0), -1.0)  # entropy -3 below -1: raise it
        assert float(high) > 0 and float(low) < 0
        np.testing.assert_allclose(high, 2.0 - (-1.0), rtol=1e-6)  # entropy - target
        np.testing.assert_allclose(low, -3.0 - (-1.0), rtol=1e-6)


def test_smoothed_target_action_is_clipped_twice():
    key = jax.random.PRNGKey(0)
    action = jnp.array([[0.0, 0.95, -0.95]] * 20_000)
    out = np.asarray(td.smoothed_target_action(key, action, 1.0, 0.5))
    noise = out[:, 0]
    assert noise.min() >= -0.5 and noise.max() <= 0.5  # noise clip
    assert np.mean(np.abs(noise) == 0.5) > 0.5  # std 1 clipped at 0.5: most hit the clip
    assert out.max() <= 1.0 and out.min() >= -1.0  # action range
    zero = td.smoothed_target_action(key, action, 0.0, 0.5)
    np.testing.assert_array_equal(zero, action)


@pytest.mark.parametrize("gamma", [0.0, 0.99])
def test_bellman_target_accepts_traced_gamma(gamma):
    f = jax.jit(td.bellman_target)
    out = f(jnp.ones(3), jnp.ones(3), jnp.array([False, True, False]), jnp.float32(gamma))
    np.testing.assert_allclose(out, [1 + gamma, 1.0, 1 + gamma], rtol=1e-6)
