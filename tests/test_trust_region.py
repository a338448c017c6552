"""Tests for purejaxpo.trust_region against float64 NumPy references.

Conjugate gradient is checked against ``numpy.linalg.solve``; the Fisher-vector product against
explicit matrices (the full Hessian of the mean KL, and the analytic Fisher of a categorical
policy built in float64 from the network's Jacobian); the line search on a quadratic objective
with a quadratic "KL", whose accepted fractions are computed by hand. JAX runs in float32. Tests
that call the library go through ``self.variant`` and so run both jitted and not jitted.
"""

from __future__ import annotations

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from jax.flatten_util import ravel_pytree

from purejaxpo import trust_region as tr
from purejaxpo.networks import Branch


def _spd(rng, n):
    m = rng.normal(size=(n, n))
    return m @ m.T + n * np.eye(n)


# ---------------------------------------------------------------------------------------------
# Conjugate gradient.
# ---------------------------------------------------------------------------------------------


class ConjugateGradientTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(3, 8)
    def test_solves_random_spd_systems(self, n):
        rng = np.random.default_rng(n)
        for _ in range(3):
            a = _spd(rng, n)
            b = rng.normal(size=n)
            expected = np.linalg.solve(a, b)  # float64 reference
            a32 = jnp.asarray(a, jnp.float32)
            solve = self.variant(lambda b: tr.conjugate_gradient(lambda v: a32 @ v, b, n + 2))
            x = solve(jnp.asarray(b, jnp.float32))
            np.testing.assert_allclose(np.asarray(x, np.float64), expected, rtol=1e-4, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_works_on_pytrees(self):
        rng = np.random.default_rng(0)
        a = _spd(rng, 5)
        b = rng.normal(size=5)
        expected = np.linalg.solve(a, b)
        a32 = jnp.asarray(a, jnp.float32)

        def matvec(tree):  # A acting on {"u": [2], "w": [3]} as one vector of 5
            flat = jnp.concatenate([tree["u"], tree["w"]])
            out = a32 @ flat
            return {"u": out[:2], "w": out[2:]}

        b_tree = {"u": jnp.asarray(b[:2], jnp.float32), "w": jnp.asarray(b[2:], jnp.float32)}
        x = self.variant(lambda b: tr.conjugate_gradient(matvec, b, 10))(b_tree)
        np.testing.assert_allclose(np.concatenate([x["u"], x["w"]]), expected, rtol=1e-4, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_one_iteration_is_a_steepest_descent_step(self):
        rng = np.random.default_rng(1)
        a = _spd(rng, 4)
        b = rng.normal(size=4)
        expected = (b @ b) / (b @ a @ b) * b  # exact line minimisation along b, float64
        a32 = jnp.asarray(a, jnp.float32)
        x = self.variant(lambda b: tr.conjugate_gradient(lambda v: a32 @ v, b, 1))(
            jnp.asarray(b, jnp.float32))
        np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_zero_right_hand_side_gives_zero_not_nan(self):
        a32 = jnp.asarray(_spd(np.random.default_rng(2), 3), jnp.float32)
        x = self.variant(lambda b: tr.conjugate_gradient(lambda v: a32 @ v, b, 5, 0.0))(
            jnp.zeros(3))
        np.testing.assert_array_equal(x, np.zeros(3))

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_systems_with_early_stops(self):
        # Systems that converge after different numbers of iterations (a diagonal matrix with k
        # distinct eigenvalues converges in k steps), batched together.
        rng = np.random.default_rng(3)
        n = 6
        mats = [np.diag([2.0] * n), np.diag([1.0, 1.0, 1.0, 4.0, 4.0, 4.0]), _spd(rng, n)]
        bs = [rng.normal(size=n) for _ in mats]
        a = jnp.asarray(np.stack(mats), jnp.float32)
        b = jnp.asarray(np.stack(bs), jnp.float32)

        def solve(a, b):
            return tr.conjugate_gradient(lambda v: a @ v, b, n + 2, residual_tol=1e-10)

        x = self.variant(jax.vmap(solve))(a, b)
        for i, (m, bi) in enumerate(zip(mats, bs)):
            np.testing.assert_allclose(x[i], np.linalg.solve(m, bi), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Fisher-vector product.
# ---------------------------------------------------------------------------------------------

OBS = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)  # N = 5 states, D = 3


def _categorical_setup():
    net = Branch(None, (4,), "tanh", "categorical", 3)  # tiny: 3 -> 4 -> 3 actions, P = 31
    params = net.init(jax.random.PRNGKey(0), OBS)
    # Move the policy off its near-uniform initialisation so the Fisher is not degenerate.
    params = jax.tree_util.tree_map(lambda x: 3.0 * x + 0.1, params)
    obs = jnp.asarray(OBS)
    old_logits = jax.lax.stop_gradient(net.apply(params, obs))

    def kl_fn(p):
        old = distrax.Categorical(logits=old_logits)
        return jnp.mean(old.kl_divergence(distrax.Categorical(logits=net.apply(p, obs))))

    return net, params, kl_fn


def _gaussian_setup():
    net = Branch(None, (4,), "tanh", "gaussian", 2)
    params = net.init(jax.random.PRNGKey(1), OBS)
    params["params"]["log_std"] = jnp.full((2,), -0.3)
    params = jax.tree_util.tree_map(lambda x: 2.0 * x + 0.05, params)
    obs = jnp.asarray(OBS)
    old_mean, old_log_std = jax.lax.stop_gradient(net.apply(params, obs))

    def kl_fn(p):
        mean, log_std = net.apply(p, obs)
        old = distrax.MultivariateNormalDiag(old_mean, jnp.exp(old_log_std))
        return jnp.mean(old.kl_divergence(distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))))

    return params, kl_fn


def _explicit_hessian(kl_fn, params):
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.hessian(lambda f: kl_fn(unravel(f)))(flat), np.float64), flat, unravel


class FisherVectorProductTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(("categorical",), ("gaussian",))
    def test_matches_explicit_hessian_of_mean_kl(self, kind):
        if kind == "categorical":
            _, params, kl_fn = _categorical_setup()
        else:
            params, kl_fn = _gaussian_setup()
        hess, flat, unravel = _explicit_hessian(kl_fn, params)
        damping = 0.1
        rng = np.random.default_rng(4)
        fvp = self.variant(lambda v: tr.fisher_vector_product(kl_fn, params, v, damping))
        for _ in range(3):
            v = rng.normal(size=flat.shape[0])
            got, _ = ravel_pytree(fvp(unravel(jnp.asarray(v, jnp.float32))))
            expected = hess @ v + damping * v
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_analytic_categorical_fisher(self):
        # F = mean_s J_s^T (diag(pi_s) - pi_s pi_s^T) J_s, J_s = d logits(s) / d params: the
        # Fisher of a softmax policy, built in float64 from the network's Jacobian.
        net, params, kl_fn = _categorical_setup()
        flat, unravel = ravel_pytree(params)
        obs = jnp.asarray(OBS)
        jac = np.asarray(jax.jacobian(lambda f: net.apply(unravel(f), obs))(flat), np.float64)
        logits = np.asarray(net.apply(params, obs), np.float64)  # [N, A]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        fisher = np.zeros((flat.shape[0], flat.shape[0]))
        for s in range(OBS.shape[0]):
            cov = np.diag(probs[s]) - np.outer(probs[s], probs[s])
            fisher += jac[s].T @ cov @ jac[s]
        fisher /= OBS.shape[0]
        assert np.linalg.matrix_rank(fisher, tol=1e-6) > 5  # a real test, not 0 == 0

        rng = np.random.default_rng(5)
        fvp = self.variant(lambda v: tr.fisher_vector_product(kl_fn, params, v, 0.0))
        for _ in range(3):
            v = rng.normal(size=flat.shape[0])
            got, _ = ravel_pytree(fvp(unravel(jnp.asarray(v, jnp.float32))))
            np.testing.assert_allclose(got, fisher @ v, rtol=1e-4, atol=1e-5)

    def test_cg_on_fvp_solves_the_damped_fisher_system(self):
        _, params, kl_fn = _categorical_setup()
        hess, flat, unravel = _explicit_hessian(kl_fn, params)
        damping = 0.1
        g = np.random.default_rng(6).normal(size=flat.shape[0])

        @jax.jit
        def solve(g):
            matvec = lambda v: tr.fisher_vector_product(kl_fn, params, v, damping)  # noqa: E731
            return ravel_pytree(tr.conjugate_gradient(matvec, unravel(g), 60, 1e-12))[0]

        x = solve(jnp.asarray(g, jnp.float32))
        expected = np.linalg.solve(hess + damping * np.eye(len(g)), g)
        np.testing.assert_allclose(x, expected, rtol=2e-3, atol=2e-3)


# ---------------------------------------------------------------------------------------------
# Line search: maximise f(x) = -|x - target|^2 from x0 = 0 under "KL" 0.5 |x - x0|^2.
# ---------------------------------------------------------------------------------------------

X0 = np.zeros(2)


def _objective(p):
    return -jnp.sum(jnp.square(p["x"] - jnp.array([1.0, 2.0])))


def _kl(p):
    return 0.5 * jnp.sum(jnp.square(p["x"]))


def _ref_line_search(step, max_kl, coef, k):
    """Float64 loop: the first fraction coef**i that satisfies both tests, else 0."""
    target = np.array([1.0, 2.0])
    f0 = -np.sum((X0 - target) ** 2)
    for i in range(k):
        frac = coef ** i
        x = X0 + frac * step
        if 0.5 * np.sum(x ** 2) <= max_kl and -np.sum((x - target) ** 2) - f0 > 0:
            return frac
    return 0.0


class LineSearchTest(chex.TestCase):
    def _run(self, step, max_kl, coef=0.5, k=10):
        params = {"x": jnp.asarray(X0, jnp.float32)}
        step = {"x": jnp.asarray(step, jnp.float32)}
        expected_improve = float(np.dot(2.0 * np.array([1.0, 2.0]), step["x"]))  # g . step

        def search(max_kl, coef):
            return tr.backtracking_line_search(_objective, _kl, params, step, expected_improve,
                                               max_kl, coef, k)

        return self.variant(search)(jnp.float32(max_kl), jnp.float32(coef))

    @chex.variants(with_jit=True, without_jit=True)
    def test_accepts_full_step_within_trust_region(self):
        step = np.array([0.1, 0.2])  # KL 0.025, improves
        new, info = self._run(step, max_kl=0.05)
        np.testing.assert_allclose(new["x"], step, rtol=1e-6)
        assert float(info.step_fraction) == 1.0 and float(info.accepted) == 1.0
        np.testing.assert_allclose(info.kl, 0.025, rtol=1e-5)
        np.testing.assert_allclose(info.improvement, 5.0 - np.sum((step - [1, 2]) ** 2), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_backtracks_when_full_step_violates_kl(self):
        step = np.array([0.4, 0.8])  # full step KL 0.4
        new, info = self._run(step, max_kl=0.03)
        expected = _ref_line_search(step, 0.03, 0.5, 10)
        assert expected == 0.25  # KL 0.4, 0.1, 0.025: the third fraction fits
        np.testing.assert_allclose(info.step_fraction, expected)
        np.testing.assert_allclose(new["x"], expected * step, rtol=1e-6)
        assert float(info.kl) <= 0.03

    @chex.variants(with_jit=True, without_jit=True)
    def test_backtracks_when_full_step_overshoots_the_objective(self):
        step = np.array([2.5, 5.0])  # overshoots the maximum at [1, 2]: f gets worse
        new, info = self._run(step, max_kl=100.0)
        expected = _ref_line_search(step, 100.0, 0.5, 10)
        assert expected == 0.5
        np.testing.assert_allclose(info.step_fraction, expected)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rejects_and_keeps_params_when_no_fraction_improves(self):
        step = np.array([-0.1, -0.2])  # downhill for the objective at every fraction
        new, info = self._run(step, max_kl=1.0)
        np.testing.assert_array_equal(new["x"], X0)
        assert float(info.accepted) == 0.0 and float(info.step_fraction) == 0.0
        assert float(info.kl) == 0.0 and float(info.improvement) == 0.0

    @chex.variants(with_jit=True, without_jit=True)
    def test_rejects_when_no_fraction_fits_the_trust_region(self):
        step = np.array([0.4, 0.8])
        new, info = self._run(step, max_kl=1e-6, k=3)  # smallest fraction still has KL 0.025
        np.testing.assert_array_equal(new["x"], X0)
        assert float(info.accepted) == 0.0

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_max_kl_and_coef_matches_reference(self):
        step = {"x": jnp.array([0.4, 0.8])}
        params = {"x": jnp.zeros(2)}
        max_kls = np.array([0.5, 0.1, 0.03, 0.003, 1e-7], np.float32)
        coefs = np.array([0.5, 0.8, 0.5, 0.7, 0.5], np.float32)

        def search(max_kl, coef):
            return tr.backtracking_line_search(_objective, _kl, params, step, 4.0, max_kl, coef, 10)

        new, info = self.variant(jax.vmap(search))(jnp.asarray(max_kls), jnp.asarray(coefs))
        for i in range(len(max_kls)):
            expected = _ref_line_search(np.array([0.4, 0.8]), float(max_kls[i]), float(coefs[i]), 10)
            np.testing.assert_allclose(info.step_fraction[i], expected, rtol=1e-5)
            np.testing.assert_allclose(new["x"][i], expected * np.array([0.4, 0.8]), rtol=1e-5)


class NaturalGradientStepTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_step_has_quadratic_kl_equal_to_max_kl(self):
        rng = np.random.default_rng(7)
        a = _spd(rng, 4)
        g = rng.normal(size=4)
        x = np.linalg.solve(a, g)
        a32 = jnp.asarray(a, jnp.float32)
        step, expected_improve = self.variant(
            lambda g, x: tr.natural_gradient_step(g, x, a32 @ x, 0.02))(
            jnp.asarray(g, jnp.float32), jnp.asarray(x, jnp.float32))
        step = np.asarray(step, np.float64)
        np.testing.assert_allclose(0.5 * step @ a @ step, 0.02, rtol=1e-4)
        np.testing.assert_allclose(expected_improve, g @ step, rtol=1e-4)
        assert float(expected_improve) > 0

    @chex.variants(with_jit=True, without_jit=True)
    def test_zero_direction_gives_zero_step(self):
        step, expected = self.variant(
            lambda z: tr.natural_gradient_step(z, z, z, 0.01))(jnp.zeros(3))
        np.testing.assert_array_equal(step, np.zeros(3))
        assert float(expected) == 0.0
