"""Tests for the preference-optimisation (DPO family) losses in purejaxpo.losses.

Every reference is written from the papers' formulas as explicit Python loops over elements,
in float64; JAX runs in float32 and is compared with rtol = atol = 1e-5 unless a comment says
otherwise. Tests that call the library go through ``self.variant`` and so run both jitted and
not jitted. ``ClosedFormTest`` minimises each loss's expected value for a two-answer tabular
policy and checks the known minimisers.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from purejaxpo import losses

RTOL = 1e-5
ATOL = 1e-5
B = 13

# (name, beta, label_smoothing); the coefficient sets the reference-based tests sweep.
COEFFS = [
    ("beta0.1_eps0", 0.1, 0.0),
    ("beta0.5_eps0.1", 0.5, 0.1),
    ("beta2_eps0.3", 2.0, 0.3),
]


# ---------------------------------------------------------------------------------------------
# Loop references (float64), element by element.
# ---------------------------------------------------------------------------------------------


def _elementwise(fn, *arrays):
    arrays = [np.asarray(a, np.float64) for a in arrays]
    flat = [a.reshape(-1) for a in arrays]
    out = np.zeros(flat[0].shape, np.float64)
    for i in range(out.size):
        out[i] = fn(*[float(f[i]) for f in flat])
    return out.reshape(arrays[0].shape)


def ref_sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def ref_log_sigmoid(x):
    # log(1 / (1 + exp(-x))), split by sign so exp never overflows.
    if x >= 0:
        return -math.log1p(math.exp(-x))
    return x - math.log1p(math.exp(x))


def ref_dpo(c, r, beta, eps):
    u = beta * (c - r)
    return -(1.0 - eps) * ref_log_sigmoid(u) - eps * ref_log_sigmoid(-u)


def ref_rpo(c, r, nll, beta, alpha, eps):
    # Pang et al. 2024 / TRL rpo_alpha: the DPO term plus alpha times the chosen NLL.
    u = beta * (c - r)
    return -(1.0 - eps) * ref_log_sigmoid(u) - eps * ref_log_sigmoid(-u) + alpha * nll


def ref_robust_dpo(c, r, beta, eps):
    u = beta * (c - r)
    return ((1.0 - eps) * -ref_log_sigmoid(u) - eps * -ref_log_sigmoid(-u)) / (1.0 - 2.0 * eps)


def ref_ipo(c, r, tau):
    return (c - r - 1.0 / (2.0 * tau)) ** 2


def ref_hinge(c, r, beta):
    return max(0.0, 1.0 - beta * (c - r))


def ref_kto(r, desirable, z0, beta, wd, wu):
    if desirable:
        return wd * (1.0 - ref_sigmoid(beta * (r - z0)))
    return wu * (1.0 - ref_sigmoid(beta * (z0 - r)))


def ref_kto_reference_point(x, mask):
    total, n = 0.0, 0
    for xi, mi in zip(np.asarray(x, np.float64), mask):
        if mi:
            total += float(xi)
            n += 1
    return max(0.0, total / n if n else 0.0)


def ref_orpo(a_w, a_l, lam):
    def log_odds(a):
        p = math.exp(a)
        return math.log(p / (1.0 - p))

    return -a_w - lam * ref_log_sigmoid(log_odds(a_w) - log_odds(a_l))


def ref_simpo(a_w, a_l, beta, gamma):
    return -ref_log_sigmoid(beta * a_w - beta * a_l - gamma)


def ref_bradley_terry(r_w, r_l):
    return -ref_log_sigmoid(r_w - r_l)


def ref_accuracy(s_w, s_l):
    return 1.0 if s_w > s_l else 0.0


def _random(seed, shape, scale=1.0, loc=0.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale + loc).astype(np.float32)


def _logratios(seed, shape=(B,)):
    """Chosen and rejected log-ratios whose differences span both signs, |h| up to ~10."""
    return _random(seed, shape, scale=3.0), _random(seed + 1, shape, scale=3.0)


def _avg_logps(seed, shape=(B,)):
    """Average per-token log-probabilities in (-4, -0.01)."""
    rng = np.random.default_rng(seed)
    return -rng.uniform(0.01, 4.0, size=shape).astype(np.float32)


def _assert_finite(tree):
    for leaf in jax.tree_util.tree_leaves(tree):
        leaf = np.asarray(leaf)
        assert np.all(np.isfinite(leaf)), leaf


# Extreme log-ratio differences h = +-1e3 (and zero), split between chosen and rejected.
EXTREME_C = np.array([1e3, -1e3, 0.0, 500.0, -500.0], np.float32)
EXTREME_R = np.array([0.0, 0.0, 0.0, -500.0, 500.0], np.float32)


def _grads_both(loss_fn):
    """Gradient of ``sum(loss_fn(c, r))`` with respect to both inputs."""
    return jax.grad(lambda c, r: jnp.sum(loss_fn(c, r)), argnums=(0, 1))


# ---------------------------------------------------------------------------------------------
# Paired, reference-based: DPO, cDPO, robust DPO, IPO, hinge.
# ---------------------------------------------------------------------------------------------


class PairedLossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*COEFFS)
    def test_dpo_matches_reference(self, beta, eps):
        c, r = _logratios(1)
        out = self.variant(losses.dpo_loss)(c, r, beta, eps)
        self.assertEqual(out.shape, (B,))
        ref = _elementwise(lambda ci, ri: ref_dpo(ci, ri, beta, eps), c, r)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(coeffs=COEFFS, alpha=[0.0, 0.5, 1.0])
    def test_rpo_matches_reference(self, coeffs, alpha):
        _, beta, eps = coeffs
        c, r = _logratios(11)
        nll = -_avg_logps(12)  # per-token NLL of the chosen answers, > 0
        out = self.variant(losses.rpo_loss)(c, r, nll, beta, alpha, eps)
        self.assertEqual(out.shape, (B,))
        ref = _elementwise(lambda ci, ri, ni: ref_rpo(ci, ri, ni, beta, alpha, eps), c, r, nll)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
        # The NLL enters linearly with weight alpha; the log-ratios as in DPO.
        g_nll = self.variant(jax.grad(lambda n: jnp.sum(losses.rpo_loss(c, r, n, beta, alpha,
                                                                        eps))))(nll)
        np.testing.assert_allclose(g_nll, np.full(B, alpha), rtol=1e-6)
        g_rpo = self.variant(_grads_both(lambda x, y: losses.rpo_loss(x, y, nll, beta, alpha,
                                                                      eps)))(c, r)
        g_dpo = self.variant(_grads_both(lambda x, y: losses.dpo_loss(x, y, beta, eps)))(c, r)
        for a, b in zip(g_rpo, g_dpo):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*COEFFS)
    def test_robust_dpo_matches_reference(self, beta, eps):
        c, r = _logratios(3)
        out = self.variant(losses.robust_dpo_loss)(c, r, beta, eps)
        self.assertEqual(out.shape, (B,))
        ref = _elementwise(lambda ci, ri: ref_robust_dpo(ci, ri, beta, eps), c, r)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
        if eps > 0:
            self.assertTrue((ref < 0).any())  # unlike DPO, it goes negative for large h

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*COEFFS)
    def test_ipo_and_hinge_match_reference(self, beta, _):
        c, r = _logratios(5)
        tau = beta
        ipo = self.variant(losses.ipo_loss)(c, r, tau)
        np.testing.assert_allclose(
            ipo, _elementwise(lambda ci, ri: ref_ipo(ci, ri, tau), c, r), rtol=RTOL, atol=ATOL
        )
        hinge = self.variant(losses.hinge_loss)(c, r, beta)
        ref = _elementwise(lambda ci, ri: ref_hinge(ci, ri, beta), c, r)
        np.testing.assert_allclose(hinge, ref, rtol=RTOL, atol=ATOL)
        self.assertEqual(ipo.shape, (B,))
        self.assertEqual(hinge.shape, (B,))
        self.assertTrue((ref > 0).any())
        if beta >= 0.5:  # |h| reaches ~10: both sides of the hinge
            self.assertTrue((ref == 0).any())

    @chex.variants(with_jit=True, without_jit=True)
    def test_per_element_on_any_shape(self):
        c, r = _logratios(7, (4, 6))
        out = self.variant(losses.dpo_loss)(c, r, 0.5, 0.1)
        self.assertEqual(out.shape, (4, 6))
        ref = _elementwise(lambda ci, ri: ref_dpo(ci, ri, 0.5, 0.1), c, r)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_label_smoothing_zero_is_plain_dpo(self):
        c, r = _logratios(9)
        beta = 0.7
        dpo = self.variant(losses.dpo_loss)(c, r, beta)
        np.testing.assert_allclose(
            self.variant(losses.dpo_loss)(c, r, beta, 0.0), dpo, rtol=1e-7, atol=0
        )
        np.testing.assert_allclose(
            self.variant(losses.robust_dpo_loss)(c, r, beta, 0.0), dpo, rtol=1e-6, atol=1e-7
        )
        # DPO is -log_sigmoid(beta * h), the Bradley-Terry loss on implicit rewards beta * logratio.
        bt = self.variant(losses.bradley_terry_loss)(beta * c, beta * r)
        np.testing.assert_allclose(dpo, bt, rtol=1e-6, atol=1e-6)
        # ... and so are their gradients.
        g_dpo = self.variant(_grads_both(lambda x, y: losses.dpo_loss(x, y, beta)))(c, r)
        g_rob = self.variant(_grads_both(lambda x, y: losses.robust_dpo_loss(x, y, beta, 0.0)))(
            c, r
        )
        np.testing.assert_allclose(g_rob[0], g_dpo[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(g_rob[1], g_dpo[1], rtol=1e-6, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_only_the_difference_matters(self):
        c, r = _logratios(11)
        shift = np.float32(2.5)
        for fn in (
            functools.partial(losses.dpo_loss, beta=0.5, label_smoothing=0.1),
            functools.partial(losses.robust_dpo_loss, beta=0.5, label_smoothing=0.1),
            functools.partial(losses.ipo_loss, tau=0.5),
            functools.partial(losses.hinge_loss, beta=0.5),
        ):
            fn = self.variant(fn)
            np.testing.assert_allclose(fn(c + shift, r + shift), fn(c, r), rtol=1e-5, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_extreme_inputs_finite_values_and_gradients(self):
        c, r = EXTREME_C, EXTREME_R
        fns = {
            "dpo": lambda x, y: losses.dpo_loss(x, y, 1.0),
            "cdpo": lambda x, y: losses.dpo_loss(x, y, 1.0, 0.1),
            "robust": lambda x, y: losses.robust_dpo_loss(x, y, 1.0, 0.1),
            "ipo": lambda x, y: losses.ipo_loss(x, y, 0.1),
            "hinge": lambda x, y: losses.hinge_loss(x, y, 1.0),
        }
        refs = {
            "dpo": lambda x, y: ref_dpo(x, y, 1.0, 0.0),
            "cdpo": lambda x, y: ref_dpo(x, y, 1.0, 0.1),
            "robust": lambda x, y: ref_robust_dpo(x, y, 1.0, 0.1),
            "ipo": lambda x, y: ref_ipo(x, y, 0.1),
            "hinge": lambda x, y: ref_hinge(x, y, 1.0),
        }
        for name, fn in fns.items():
            value = self.variant(fn)(c, r)
            grads = self.variant(_grads_both(fn))(c, r)
            _assert_finite((value, grads))
            np.testing.assert_allclose(
                value, _elementwise(refs[name], c, r), rtol=RTOL, atol=ATOL, err_msg=name
            )
        # DPO saturates: no gradient once h = +1e3, slope -beta at h = -1e3.
        g_c, g_r = self.variant(_grads_both(fns["dpo"]))(c, r)
        np.testing.assert_allclose(g_c, [0.0, -1.0, -0.5, 0.0, -1.0], atol=1e-6)
        np.testing.assert_allclose(g_r, -np.asarray(g_c), atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_coefficients(self):
        c, r = _logratios(13)
        betas = jnp.array([0.05, 0.3, 1.0, 4.0])
        epss = jnp.array([0.0, 0.1, 0.25, 0.4])

        def all_losses(beta, eps):
            return (
                losses.dpo_loss(c, r, beta, eps),
                losses.robust_dpo_loss(c, r, beta, eps),
                losses.ipo_loss(c, r, beta),
                losses.hinge_loss(c, r, beta),
            )

        batched = self.variant(jax.vmap(all_losses))(betas, epss)
        for i in range(len(betas)):
            single = all_losses(float(betas[i]), float(epss[i]))
            for b, s in zip(batched, single):
                self.assertEqual(b.shape, (len(betas), B))
                np.testing.assert_allclose(b[i], s, rtol=RTOL, atol=ATOL)
        b_, e_ = float(betas[2]), float(epss[2])
        np.testing.assert_allclose(
            batched[0][2], _elementwise(lambda x, y: ref_dpo(x, y, b_, e_), c, r), rtol=RTOL,
            atol=ATOL,
        )

    def test_coefficients_never_retrace(self):
        c, r = _logratios(15)
        fn = jax.jit(chex.assert_max_traces(losses.dpo_loss, n=1))
        for beta, eps in ((0.1, 0.0), (0.5, 0.1), (2.0, 0.3)):
            np.testing.assert_allclose(
                fn(c, r, beta, eps),
                _elementwise(lambda x, y: ref_dpo(x, y, beta, eps), c, r),
                rtol=RTOL,
                atol=ATOL,
            )

    def test_shape_mismatch_raises(self):
        for fn in (
            functools.partial(losses.dpo_loss, beta=0.1),
            functools.partial(losses.ipo_loss, tau=0.1),
            functools.partial(losses.hinge_loss, beta=0.1),
            functools.partial(losses.robust_dpo_loss, beta=0.1, label_smoothing=0.1),
            functools.partial(losses.simpo_loss, beta=2.0, gamma=0.5),
            functools.partial(losses.orpo_loss, lam=0.1),
            losses.bradley_terry_loss,
            losses.implicit_reward_accuracy,
        ):
            with self.assertRaises(AssertionError):
                fn(-jnp.ones(3), -jnp.ones(4))


# ---------------------------------------------------------------------------------------------
# KTO.
# ---------------------------------------------------------------------------------------------


class KTOTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("beta0.1_z0", 0.1, 0.0, 1.0, 1.0),
        ("beta0.5_z0.7_weighted", 0.5, 0.7, 1.0, 1.33),
        ("beta2_z1.5_weighted", 2.0, 1.5, 0.8, 1.0),
    )
    def test_loss_matches_reference(self, beta, z0, wd, wu):
        x = _random(20, (B,), scale=3.0)
        desirable = np.random.default_rng(21).random(B) < 0.5
        out = self.variant(losses.kto_loss)(x, desirable, z0, beta, wd, wu)
        self.assertEqual(out.shape, (B,))
        ref = np.array([ref_kto(float(x[i]), desirable[i], z0, beta, wd, wu) for i in range(B)])
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
        self.assertTrue(desirable.any() and (~desirable).any())

    @chex.variants(with_jit=True, without_jit=True)
    def test_reference_point_matches_reference(self):
        rp = self.variant(losses.kto_reference_point)
        x = _random(22, (B,), loc=0.4)
        mask = np.random.default_rng(23).random(B) < 0.6
        neg = _random(24, (B,), loc=-3.0)  # negative mean: clamped to 0
        for xi, mi in ((x, None), (x, mask), (neg, None), (neg, mask)):
            out = rp(xi, mi)
            self.assertEqual(out.shape, ())
            full = np.ones(B, bool) if mi is None else mi
            np.testing.assert_allclose(out, ref_kto_reference_point(xi, full), rtol=RTOL, atol=ATOL)
        self.assertGreater(float(rp(x, None)), 0.0)
        self.assertEqual(float(rp(neg, None)), 0.0)
        # An all-false mask gives 0, not NaN.
        self.assertEqual(float(rp(x, np.zeros(B, bool))), 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_reference_point_nonnegative_with_zero_gradient(self):
        rp = self.variant(losses.kto_reference_point)
        grad = self.variant(jax.grad(losses.kto_reference_point))
        for seed, loc in ((25, 1.0), (26, -1.0), (27, 0.0)):
            x = _random(seed, (B,), loc=loc)
            self.assertGreaterEqual(float(rp(x)), 0.0)
            np.testing.assert_array_equal(grad(x), np.zeros(B))

    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_stops_gradient_through_reference_point(self):
        x = _random(28, (B,), scale=2.0)
        mismatched = _random(29, (B,), loc=0.5)
        desirable = np.arange(B) % 2 == 0

        def total(z0_source):
            z0 = losses.kto_reference_point(z0_source)
            return jnp.sum(losses.kto_loss(x, desirable, z0, 0.5))

        np.testing.assert_array_equal(self.variant(jax.grad(total))(mismatched), np.zeros(B))
        g_z0 = self.variant(
            jax.grad(lambda z0: jnp.sum(losses.kto_loss(x, desirable, z0, 0.5)))
        )(jnp.float32(0.3))
        self.assertEqual(float(g_z0), 0.0)
        # ... while the gradient to the log-ratios is the sigmoid's: -beta*lam*s*(1-s) for
        # desirable examples, +beta*lam*s*(1-s) for undesirable ones.
        g = self.variant(
            jax.grad(lambda lr: jnp.sum(losses.kto_loss(lr, desirable, 0.3, 0.5, 1.0, 2.0)))
        )(x)
        s = np.array([ref_sigmoid(0.5 * (float(xi) - 0.3)) for xi in x])
        ref_g = np.where(desirable, -0.5 * 1.0, 0.5 * 2.0) * s * (1.0 - s)
        np.testing.assert_allclose(g, ref_g, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_extreme_inputs_finite(self):
        x = np.array([1e3, -1e3, 1e3, -1e3, 0.0], np.float32)
        desirable = np.array([True, True, False, False, True])
        fn = self.variant(losses.kto_loss)
        value = fn(x, desirable, 0.5, 1.0)
        g = self.variant(jax.grad(lambda lr: jnp.sum(losses.kto_loss(lr, desirable, 0.5, 1.0))))(x)
        _assert_finite((value, g))
        np.testing.assert_allclose(value, [0.0, 1.0, 1.0, 0.0, ref_sigmoid(0.5)], atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_coefficients(self):
        x = _random(30, (B,), scale=2.0)
        desirable = np.random.default_rng(31).random(B) < 0.5
        betas = jnp.array([0.1, 0.5, 2.0])
        z0s = jnp.array([0.0, 0.3, 1.0])
        wds = jnp.array([1.0, 0.5, 1.0])
        wus = jnp.array([1.0, 1.0, 1.5])
        fn = jax.vmap(lambda b, z, wd, wu: losses.kto_loss(x, desirable, z, b, wd, wu))
        batched = self.variant(fn)(betas, z0s, wds, wus)
        for i in range(len(betas)):
            args = (float(z0s[i]), float(betas[i]), float(wds[i]), float(wus[i]))
            np.testing.assert_allclose(
                batched[i], losses.kto_loss(x, desirable, *args), rtol=RTOL, atol=ATOL
            )
            ref = np.array([ref_kto(float(x[j]), desirable[j], *args) for j in range(B)])
            np.testing.assert_allclose(batched[i], ref, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Reference-free: ORPO, SimPO.
# ---------------------------------------------------------------------------------------------


class ReferenceFreeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("lam0.1", 0.1), ("lam0.5", 0.5), ("lam2", 2.0))
    def test_orpo_matches_reference(self, lam):
        a_w, a_l = _avg_logps(40), _avg_logps(41)
        out = self.variant(losses.orpo_loss)(a_w, a_l, lam)
        self.assertEqual(out.shape, (B,))
        ref = _elementwise(lambda w, l_: ref_orpo(w, l_, lam), a_w, a_l)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
        # lam = 0 leaves the NLL of the chosen answer.
        np.testing.assert_allclose(self.variant(losses.orpo_loss)(a_w, a_l, 0.0), -a_w, rtol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_orpo_extreme_inputs(self):
        # Average log-probs near 0 (probability ~1) and very negative, in every combination.
        vals = np.array([-1e-7, -1e-3, -50.0], np.float32)
        a_w = np.repeat(vals, 3)
        a_l = np.tile(vals, 3)
        fn = lambda w, l_: losses.orpo_loss(w, l_, 0.5)  # noqa: E731
        value = self.variant(fn)(a_w, a_l)
        grads = self.variant(_grads_both(fn))(a_w, a_l)
        _assert_finite((value, grads))
        ref = _elementwise(lambda w, l_: ref_orpo(w, l_, 0.5), a_w, a_l)
        np.testing.assert_allclose(value, ref, rtol=1e-5, atol=1e-5)
        # d loss / d a_w < 0 (raise the chosen), d loss / d a_l >= 0 (lower the rejected).
        self.assertTrue(np.all(np.asarray(grads[0]) < 0))
        self.assertTrue(np.all(np.asarray(grads[1]) >= 0))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("beta2_gamma0", 2.0, 0.0), ("beta2_gamma0.5", 2.0, 0.5), ("beta10_gamma3", 10.0, 3.0)
    )
    def test_simpo_matches_reference(self, beta, gamma):
        a_w, a_l = _avg_logps(42), _avg_logps(43)
        out = self.variant(losses.simpo_loss)(a_w, a_l, beta, gamma)
        self.assertEqual(out.shape, (B,))
        ref = _elementwise(lambda w, l_: ref_simpo(w, l_, beta, gamma), a_w, a_l)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_simpo_extreme_inputs(self):
        a_w = np.array([-1e-7, -50.0, -1e3, -1e-7], np.float32)
        a_l = np.array([-50.0, -1e-7, -1e-7, -1e3], np.float32)
        fn = lambda w, l_: losses.simpo_loss(w, l_, 2.0, 1.0)  # noqa: E731
        value = self.variant(fn)(a_w, a_l)
        _assert_finite((value, self.variant(_grads_both(fn))(a_w, a_l)))
        ref = _elementwise(lambda w, l_: ref_simpo(w, l_, 2.0, 1.0), a_w, a_l)
        np.testing.assert_allclose(value, ref, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_coefficients(self):
        a_w, a_l = _avg_logps(44), _avg_logps(45)
        betas = jnp.array([1.0, 2.0, 10.0])
        gammas = jnp.array([0.0, 0.5, 3.0])
        lams = jnp.array([0.0, 0.1, 1.0])

        def both(beta, gamma, lam):
            return losses.simpo_loss(a_w, a_l, beta, gamma), losses.orpo_loss(a_w, a_l, lam)

        simpo_b, orpo_b = self.variant(jax.vmap(both))(betas, gammas, lams)
        for i in range(len(betas)):
            s, o = both(float(betas[i]), float(gammas[i]), float(lams[i]))
            np.testing.assert_allclose(simpo_b[i], s, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(orpo_b[i], o, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Reward models: Bradley-Terry loss, preference accuracy.
# ---------------------------------------------------------------------------------------------


class RewardModelTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_bradley_terry_matches_reference(self):
        r_w, r_l = _logratios(50)
        out = self.variant(losses.bradley_terry_loss)(r_w, r_l)
        self.assertEqual(out.shape, (B,))
        np.testing.assert_allclose(
            out, _elementwise(ref_bradley_terry, r_w, r_l), rtol=RTOL, atol=ATOL
        )
        value = self.variant(losses.bradley_terry_loss)(EXTREME_C, EXTREME_R)
        grads = self.variant(_grads_both(losses.bradley_terry_loss))(EXTREME_C, EXTREME_R)
        _assert_finite((value, grads))
        np.testing.assert_allclose(
            value, _elementwise(ref_bradley_terry, EXTREME_C, EXTREME_R), rtol=RTOL, atol=ATOL
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_accuracy(self):
        s_w, s_l = _logratios(52)
        s_l[:3] = s_w[:3]  # ties count as wrong
        out = self.variant(losses.implicit_reward_accuracy)(s_w, s_l)
        self.assertEqual(out.shape, (B,))
        self.assertEqual(out.dtype, jnp.float32)
        ref = _elementwise(ref_accuracy, s_w, s_l)
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(np.asarray(out)[:3], 0.0)
        self.assertTrue(0 < ref.sum() < B)
        ints = self.variant(losses.implicit_reward_accuracy)(
            jnp.array([1, 2, 3]), jnp.array([2, 2, 1])
        )
        np.testing.assert_array_equal(ints, [0.0, 0.0, 1.0])
        self.assertTrue(jnp.issubdtype(ints.dtype, jnp.floating))


# ---------------------------------------------------------------------------------------------
# Closed-form minimisers on a tabular policy: one prompt, two answers.
# ---------------------------------------------------------------------------------------------

_LOG_HALF = math.log(0.5)
_STEPS = 4000


def _expected_loss(theta, p, loss_fn):
    """``p * L(y1 over y2) + (1 - p) * L(y2 over y1)`` for ``pi = softmax(theta)``.

    The reference policy is uniform, so each log-ratio is ``log pi(y) - log 0.5`` and the
    log-ratio difference of y1 over y2 is ``h = theta_1 - theta_2``.
    """
    logratio = jax.nn.log_softmax(theta) - _LOG_HALF
    chosen = jnp.stack([logratio[0], logratio[1]])
    rejected = jnp.stack([logratio[1], logratio[0]])
    weights = jnp.stack([p, 1.0 - p])
    return jnp.sum(weights * loss_fn(chosen, rejected))


def _minimise(loss_fn, p):
    """Adam with a learning rate decaying 0.3 -> 1e-5, all in one ``lax.scan``; returns h."""
    opt = optax.adam(optax.exponential_decay(0.3, _STEPS, 1e-5 / 0.3))
    theta = jnp.zeros(2, jnp.float32)
    grad_fn = jax.grad(_expected_loss)

    def step(carry, _):
        theta, state = carry
        updates, state = opt.update(grad_fn(theta, p, loss_fn), state)
        return (optax.apply_updates(theta, updates), state), None

    (theta, _), _ = jax.lax.scan(step, (theta, opt.init(theta)), None, length=_STEPS)
    return theta[0] - theta[1], _expected_loss(theta, p, loss_fn)


@jax.jit
def _minimisers(ps, beta, tau, eps):
    """Minimising h (and the loss there) of each loss for each preference probability."""

    def per_p(p):
        noisy_p = (1.0 - 2.0 * eps) * p + eps  # p's labels, each flipped with probability eps
        return {
            "dpo": _minimise(lambda c, r: losses.dpo_loss(c, r, beta), p),
            "cdpo": _minimise(lambda c, r: losses.dpo_loss(c, r, beta, eps), p),
            "robust": _minimise(lambda c, r: losses.robust_dpo_loss(c, r, beta, eps), noisy_p),
            "robust_as_dpo": _minimise(lambda c, r: losses.dpo_loss(c, r, beta), noisy_p),
            "ipo": _minimise(lambda c, r: losses.ipo_loss(c, r, tau), p),
            "hinge": _minimise(lambda c, r: losses.hinge_loss(c, r, beta), p),
        }

    return jax.vmap(per_p)(ps)


def _logit(q):
    return np.log(q / (1.0 - q))


class ClosedFormTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("beta0.1_tau0.1_eps0.1", 0.1, 0.1, 0.1),
        ("beta1_tau0.5_eps0.2", 1.0, 0.5, 0.2),
    )
    def test_minimisers(self, beta, tau, eps):
        ps = np.array([0.6, 0.75, 0.9])
        out = jax.device_get(_minimisers(jnp.asarray(ps, jnp.float32), beta, tau, eps))
        h = {k: np.asarray(v[0], np.float64) for k, v in out.items()}
        value = {k: np.asarray(v[1], np.float64) for k, v in out.items()}
        tol = 1e-3
        # DPO: d/du [-p log s(u) - (1-p) log s(-u)] = s(u) - p = 0 at u = beta h = logit(p).
        np.testing.assert_allclose(beta * h["dpo"], _logit(ps), atol=tol)
        # cDPO: the same with p replaced by the smoothed label (1 - eps) p + eps (1 - p).
        np.testing.assert_allclose(
            beta * h["cdpo"], _logit((1 - eps) * ps + eps * (1 - ps)), atol=tol
        )
        # Robust DPO on labels flipped with probability eps recovers the clean logit(q) ...
        np.testing.assert_allclose(beta * h["robust"], _logit(ps), atol=tol)
        # ... where plain DPO settles on the noisy preference.
        noisy = (1 - 2 * eps) * ps + eps
        np.testing.assert_allclose(beta * h["robust_as_dpo"], _logit(noisy), atol=tol)
        self.assertTrue(np.all(np.abs(_logit(noisy) - _logit(ps)) > 0.05))
        # IPO: d/dh [p (h - c)^2 + (1-p) (h + c)^2] = 0 at h = (2p - 1) c, c = 1 / (2 tau).
        np.testing.assert_allclose(h["ipo"], (2 * ps - 1) / (2 * tau), atol=tol)
        # Hinge: f(u) = p relu(1 - u) + (1-p) relu(1 + u) is decreasing (slope 1 - 2p < 0) on
        # [-1, 1] and increasing (slope 1 - p) beyond 1, so for p > 1/2 its minimum is at u = 1,
        # with value 2 (1 - p).
        np.testing.assert_allclose(beta * h["hinge"], np.ones(3), atol=tol)
        np.testing.assert_allclose(value["hinge"], 2 * (1 - ps), atol=tol)
        # The minimised DPO loss is the entropy of the preference: -p log p - (1-p) log(1-p).
        np.testing.assert_allclose(
            value["dpo"], -ps * np.log(ps) - (1 - ps) * np.log(1 - ps), atol=1e-5
        )


@pytest.mark.parametrize("cls", [PairedLossTest, KTOTest, ReferenceFreeTest, RewardModelTest])
def test_both_variants_generated(cls):
    names = [n for n in dir(cls) if n.startswith("test_")]
    with_jit = {n.replace("with_jit", "") for n in names if "with_jit" in n and "without" not in n}
    without_jit = {n.replace("without_jit", "") for n in names if "without_jit" in n}
    assert with_jit and with_jit == without_jit
