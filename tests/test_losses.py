"""Tests for purejaxpo.losses against plain NumPy float64 loop references.

Every reference is written from the docstring formulas as explicit Python loops over elements,
in float64; JAX runs in float32 and is compared with rtol = atol = 1e-5 unless a comment says
otherwise. Tests that call the library go through ``self.variant`` and so run both jitted and
not jitted.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from purejaxpo import losses

RTOL = 1e-5
ATOL = 1e-5

# Few distinct shapes on purpose: un-jitted JAX compiles every op once per new shape.
SHAPES = [("N", (13,)), ("BxL", (4, 6))]


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


def ref_masked_reduce(x, mask, axis, mean):
    x = np.asarray(x, np.float64)
    mask = np.asarray(mask).astype(bool)
    if axis is None:
        total, n = 0.0, 0
        for xi, mi in zip(x.reshape(-1), mask.reshape(-1)):
            if mi:
                total += xi
                n += 1
        return total / max(n, 1) if mean else total
    assert x.ndim == 2
    if axis == 0:
        x, mask = x.T, mask.T
    out = np.zeros(x.shape[0], np.float64)
    for i in range(x.shape[0]):
        total, n = 0.0, 0
        for j in range(x.shape[1]):
            if mask[i, j]:
                total += x[i, j]
                n += 1
        out[i] = total / max(n, 1) if mean else total
    return out


def ref_surrogate_element(r, a, clip_low, clip_high):
    # The PPO objective in its piecewise form (Schulman et al. 2017, fig. 1): for A >= 0 the
    # ratio is capped above at 1 + eps_high, for A < 0 it is capped below at 1 - eps_low.
    if a >= 0:
        return -a * min(r, 1.0 + clip_high)
    return -a * max(r, 1.0 - clip_low)


def ref_clip_fraction_element(r, clip_low, clip_high):
    return 1.0 if (r < 1.0 - clip_low or r > 1.0 + clip_high) else 0.0


def ref_value_loss_element(v, t, old, eps):
    unclipped = (v - t) ** 2
    if eps is None:
        return 0.5 * unclipped
    delta = v - old
    if delta > eps:
        delta = eps
    if delta < -eps:
        delta = -eps
    clipped = (old + delta - t) ** 2
    return 0.5 * max(unclipped, clipped)


def ref_entropy(logits):
    logits = np.asarray(logits, np.float64)
    rows = logits.reshape(-1, logits.shape[-1])
    out = np.zeros(rows.shape[0], np.float64)
    for i, row in enumerate(rows):
        m = max(row)
        exps = [math.exp(z - m) for z in row]
        total = sum(exps)
        h = 0.0
        for e in exps:
            p = e / total
            if p > 0:
                h -= p * math.log(p)
        out[i] = h
    return out.reshape(logits.shape[:-1])


def ref_k1(lp, ref):
    return lp - ref


def ref_k2(lp, ref):
    return 0.5 * (ref - lp) ** 2


def ref_k3(lp, ref):
    d = ref - lp
    return math.exp(d) - 1.0 - d


def _random(seed, shape, scale=1.0, loc=0.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale + loc).astype(np.float32)


def _ratios(seed, shape, margin=1e-3, edges=(0.8, 1.2, 0.72, 1.28)):
    """Ratios spread around 1, kept ``margin`` away from the clip edges (kinks)."""
    r = np.exp(_random(seed, shape, scale=0.4)).astype(np.float64)
    for e in edges:
        near = np.abs(r - e) < margin
        r[near] = e + 2 * margin
    return r.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# masked_mean / masked_sum.
# ---------------------------------------------------------------------------------------------


class MaskedReductionTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("N_all", (13,), None),
        ("BxL_all", (4, 6), None),
        ("BxL_axis0", (4, 6), 0),
        ("BxL_axis1", (4, 6), 1),
    )
    def test_matches_loop_reference(self, shape, axis):
        rng = np.random.default_rng(1)
        x = _random(2, shape, scale=2.0, loc=0.5)
        mask = rng.random(shape) < 0.5
        if len(shape) == 2:
            mask[1, :] = False  # an empty row
            mask[:, 2] = False  # an empty column
            mask[0, 0] = True
        mean_fn = self.variant(functools.partial(losses.masked_mean, axis=axis))
        sum_fn = self.variant(functools.partial(losses.masked_sum, axis=axis))
        m = mean_fn(x, mask)
        s = sum_fn(x, mask)
        np.testing.assert_allclose(m, ref_masked_reduce(x, mask, axis, True), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(s, ref_masked_reduce(x, mask, axis, False), rtol=RTOL, atol=ATOL)
        self.assertFalse(np.any(np.isnan(np.asarray(m))))
        # An all-true mask and no mask agree with the plain mean / sum.
        full = np.ones(shape, bool)
        np.testing.assert_allclose(mean_fn(x, full), mean_fn(x, None), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(
            mean_fn(x, None), ref_masked_reduce(x, full, axis, True), rtol=RTOL, atol=ATOL
        )
        np.testing.assert_allclose(
            sum_fn(x, None), ref_masked_reduce(x, full, axis, False), rtol=RTOL, atol=ATOL
        )
        # Whatever sits in masked-out slots (inf, NaN padding) changes nothing.
        for junk in (np.inf, -np.inf, np.nan, 1e30):
            y = np.where(mask, x, np.float32(junk)).astype(np.float32)
            np.testing.assert_array_equal(mean_fn(y, mask), m)
            np.testing.assert_array_equal(sum_fn(y, mask), s)

    @chex.variants(with_jit=True, without_jit=True)
    def test_all_false_mask_gives_zero_not_nan(self):
        x = _random(3, (4, 6))
        none_ = np.zeros((4, 6), bool)
        self.assertEqual(float(self.variant(losses.masked_mean)(x, none_)), 0.0)
        self.assertEqual(float(self.variant(losses.masked_sum)(x, none_)), 0.0)
        per_row = self.variant(functools.partial(losses.masked_mean, axis=1))(x, none_)
        np.testing.assert_array_equal(per_row, np.zeros(4))

    @chex.variants(with_jit=True, without_jit=True)
    def test_masked_mean_gradient(self):
        x = _random(4, (4, 6))
        mask = np.random.default_rng(5).random((4, 6)) < 0.5
        g = self.variant(jax.grad(losses.masked_mean))(x, mask)
        np.testing.assert_allclose(g, mask / mask.sum(), rtol=RTOL, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Clipped surrogate, clip fraction, policy gradient.
# ---------------------------------------------------------------------------------------------


class SurrogateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        *[(f"{n}_sym", s, 0.2, None) for n, s in SHAPES],
        *[(f"{n}_dapo", s, 0.2, 0.28) for n, s in SHAPES],
        ("BxL_wide_low", (4, 6), 0.5, 0.1),
    )
    def test_matches_piecewise_reference(self, shape, clip_low, clip_high):
        r = _ratios(10, shape)
        a = _random(11, shape)
        a.reshape(-1)[:2] = 0.0  # zero advantages: zero loss
        fn = self.variant(losses.clipped_surrogate)
        out = fn(r, a, clip_low, clip_high)
        high = clip_low if clip_high is None else clip_high
        ref = _elementwise(lambda ri, ai: ref_surrogate_element(ri, ai, clip_low, high), r, a)
        self.assertEqual(out.shape, shape)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
        frac = self.variant(losses.clip_fraction)(r, clip_low, clip_high)
        ref_frac = _elementwise(lambda ri: ref_clip_fraction_element(ri, clip_low, high), r)
        np.testing.assert_array_equal(frac, ref_frac)
        self.assertGreater(ref_frac.sum(), 0)  # the data really exercise clipping
        self.assertLess(ref_frac.sum(), ref_frac.size)

    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_computed_cases(self):
        fn = self.variant(losses.clipped_surrogate)
        r = jnp.array([0.5, 1.5, 1.5, 0.5, 0.9, 1.1])
        a = jnp.array([-2.0, -2.0, 2.0, 2.0, -2.0, 2.0])
        out = fn(r, a, 0.2)
        # A < 0, r < 1 - eps: max(0.5 * 2, 0.8 * 2) = 1.6, the clipped term.
        # A < 0, r > 1 + eps: max(1.5 * 2, 1.2 * 2) = 3.0, the unclipped, larger loss.
        # A > 0, r > 1 + eps: -min(3.0, 2.4) = -2.4 (clipped); r < 1 - eps: -1.0 (unclipped).
        # Inside the range: -r * A.
        np.testing.assert_allclose(out, [1.6, 3.0, -2.4, -1.0, 1.8, -2.2], rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_asymmetric_clip_dapo(self):
        fn = self.variant(losses.clipped_surrogate)
        r = jnp.array([1.25, 1.3, 0.75, 0.7, 0.85])
        a = jnp.array([1.0, 1.0, -1.0, -1.0, -1.0])
        np.testing.assert_allclose(fn(r, a, 0.2, 0.28), [-1.25, -1.28, 0.8, 0.8, 0.85], rtol=1e-6)
        np.testing.assert_allclose(fn(r, a, 0.2), [-1.2, -1.2, 0.8, 0.8, 0.85], rtol=1e-6)
        np.testing.assert_allclose(fn(r, a, 0.1, 0.28), [-1.25, -1.28, 0.9, 0.9, 0.9], rtol=1e-6)
        frac = self.variant(losses.clip_fraction)(r, 0.2, 0.28)
        np.testing.assert_array_equal(frac, [0.0, 1.0, 1.0, 1.0, 0.0])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("sym", 0.2, None), ("dapo", 0.2, 0.28))
    def test_gradient_zero_exactly_where_clipping_is_active(self, clip_low, clip_high):
        shape = (4, 6)
        r = _ratios(12, shape)
        a = _random(13, shape)
        high = clip_low if clip_high is None else clip_high
        grad_fn = self.variant(
            jax.grad(lambda ratio: jnp.sum(losses.clipped_surrogate(ratio, a, clip_low, clip_high)))
        )
        g = np.asarray(grad_fn(r))
        active = ((a > 0) & (r > 1 + high)) | ((a < 0) & (r < 1 - clip_low))
        self.assertTrue(active.any() and (~active).any())
        np.testing.assert_array_equal(g[active], 0.0)
        self.assertTrue(np.all(g[~active] != 0.0))
        np.testing.assert_allclose(g[~active], -a[~active], rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*SHAPES)
    def test_ratio_one_is_plain_policy_gradient(self, shape):
        a = _random(14, shape)
        logp = _random(15, shape, scale=0.5, loc=-2.0)
        ones = np.ones(shape, np.float32)
        surrogate = self.variant(losses.clipped_surrogate)
        np.testing.assert_array_equal(surrogate(ones, a, 0.2), -a)
        np.testing.assert_array_equal(surrogate(ones, a, 0.2, 0.28), -a)
        pg = self.variant(losses.policy_gradient_loss)
        np.testing.assert_allclose(
            pg(logp, a), _elementwise(lambda lp, ai: -lp * ai, logp, a), rtol=RTOL, atol=ATOL
        )
        # d(pg loss)/d(log pi) == d(surrogate)/d(ratio) at ratio 1 == -A
        g_pg = self.variant(jax.grad(lambda lp: jnp.sum(losses.policy_gradient_loss(lp, a))))(logp)
        g_sur = self.variant(
            jax.grad(lambda ratio: jnp.sum(losses.clipped_surrogate(ratio, a, 0.2)))
        )(ones)
        np.testing.assert_allclose(g_pg, g_sur, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(g_pg, -a, rtol=RTOL, atol=ATOL)

        # ... and through ratio = exp(log pi - stop_grad(log pi_old)) with pi == pi_old.
        def via_ratio(lp):
            ratio = jnp.exp(lp - jax.lax.stop_gradient(lp))
            return jnp.sum(losses.clipped_surrogate(ratio, a, 0.2))

        np.testing.assert_allclose(self.variant(jax.grad(via_ratio))(logp), g_pg, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_policy_gradient_stops_gradient_to_advantages(self):
        a = _random(16, (13,))
        logp = _random(17, (13,), loc=-1.0)
        g_a = self.variant(jax.grad(lambda adv: jnp.sum(losses.policy_gradient_loss(logp, adv))))(a)
        np.testing.assert_array_equal(g_a, np.zeros(13))

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_clip_ranges(self):
        r = _ratios(18, (13,))
        a = _random(19, (13,))
        lows = jnp.array([0.1, 0.2, 0.3, 0.05])
        highs = jnp.array([0.1, 0.28, 0.2, 0.5])

        def both(lo, hi):
            return losses.clipped_surrogate(r, a, lo, hi), losses.clip_fraction(r, lo, hi)

        loss_b, frac_b = self.variant(jax.vmap(both))(lows, highs)
        for i in range(len(lows)):
            lo, hi = float(lows[i]), float(highs[i])
            ref = _elementwise(lambda ri, ai: ref_surrogate_element(ri, ai, lo, hi), r, a)
            np.testing.assert_allclose(loss_b[i], ref, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(
                loss_b[i], losses.clipped_surrogate(r, a, lo, hi), rtol=RTOL, atol=ATOL
            )
            np.testing.assert_array_equal(
                frac_b[i], _elementwise(lambda ri: ref_clip_fraction_element(ri, lo, hi), r)
            )


# ---------------------------------------------------------------------------------------------
# Value loss.
# ---------------------------------------------------------------------------------------------


class ValueLossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*SHAPES)
    def test_matches_loop_reference(self, shape):
        v = _random(20, shape)
        t = _random(21, shape)
        old = (v + _random(22, shape, scale=0.3)).astype(np.float32)
        fn = self.variant(losses.value_loss)
        unclipped = fn(v, t)
        np.testing.assert_allclose(
            unclipped,
            _elementwise(lambda vi, ti: ref_value_loss_element(vi, ti, None, None), v, t),
            rtol=RTOL,
            atol=ATOL,
        )
        clipped = fn(v, t, old, 0.2)
        ref = _elementwise(lambda vi, ti, oi: ref_value_loss_element(vi, ti, oi, 0.2), v, t, old)
        np.testing.assert_allclose(clipped, ref, rtol=RTOL, atol=ATOL)
        # clipping is really exercised: it changes some elements, and never lowers the loss
        self.assertTrue(np.any(np.abs(np.asarray(clipped) - np.asarray(unclipped)) > 1e-3))
        self.assertTrue(np.all(np.asarray(clipped) >= np.asarray(unclipped)))

    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_computed(self):
        fn = self.variant(losses.value_loss)
        v = jnp.array([1.5, 1.5, 1.1, 0.5])
        t = jnp.array([2.0, 1.0, 3.0, 2.0])
        old = jnp.array([1.0, 1.0, 1.0, 1.0])
        # 1: V clipped to 1.2, (1.2 - 2)^2 = .64 > .25 -> .32.
        # 2: (.5)^2 = .25 > (1.2 - 1)^2 = .04 -> .125.
        # 3: inside the range: .5 * 1.9^2 = 1.805.  4: V clipped to .8: (1.2)^2 = 1.44 < 2.25.
        np.testing.assert_allclose(fn(v, t, old, 0.2), [0.32, 0.125, 1.805, 1.125], rtol=1e-6)
        np.testing.assert_allclose(fn(v, t), [0.125, 0.125, 1.805, 1.125], rtol=1e-6)

    def test_clip_without_old_values_raises(self):
        with self.assertRaises(ValueError):
            losses.value_loss(jnp.zeros(3), jnp.zeros(3), clip_eps=0.2)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_clip_eps(self):
        v, t = _random(23, (13,)), _random(24, (13,))
        old = (v + _random(25, (13,), scale=0.3)).astype(np.float32)
        eps = jnp.array([0.01, 0.1, 0.2, 1.0])
        batched = self.variant(jax.vmap(lambda e: losses.value_loss(v, t, old, e)))(eps)
        for i in range(len(eps)):
            e = float(eps[i])
            ref = _elementwise(lambda vi, ti, oi: ref_value_loss_element(vi, ti, oi, e), v, t, old)
            np.testing.assert_allclose(batched[i], ref, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Entropy.
# ---------------------------------------------------------------------------------------------


class EntropyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("V", (6,)), ("BxV", (4, 6)), ("BxLxV", (2, 4, 6)))
    def test_matches_loop_reference(self, shape):
        logits = _random(30, shape, scale=2.0)
        out = self.variant(losses.entropy_from_logits)(logits)
        self.assertEqual(out.shape, shape[:-1])
        np.testing.assert_allclose(out, ref_entropy(logits), rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_uniform_and_peaked(self):
        fn = self.variant(losses.entropy_from_logits)
        logits = np.zeros((4, 6), np.float32)
        logits[1] = 7.0  # any constant: still uniform
        logits[2, 0] = 200.0  # (numerically) a point mass
        logits[3] = [0.0, 0.0, 0.0, -200.0, -200.0, -200.0]
        np.testing.assert_allclose(
            fn(logits), [math.log(6), math.log(6), 0.0, math.log(3)], rtol=RTOL, atol=ATOL
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("minus_1e9", -1e9), ("minus_inf", -np.inf))
    def test_masked_logits_value_and_gradient(self, masked_value):
        logits = _random(31, (4, 6), scale=2.0)
        mask = np.ones((4, 6), bool)
        mask[:, 4:] = False
        mask[0, 1:] = False  # a row with a single legal action: entropy 0
        masked = np.where(mask, logits, np.float32(masked_value)).astype(np.float32)
        value, grad = self.variant(
            jax.value_and_grad(lambda z: jnp.sum(losses.entropy_from_logits(z)))
        )(masked)
        expected = np.array([ref_entropy(logits[i][mask[i]]) for i in range(4)])
        h = self.variant(losses.entropy_from_logits)(masked)
        np.testing.assert_allclose(h, expected, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(value, expected.sum(), rtol=RTOL, atol=ATOL)
        grad = np.asarray(grad)
        self.assertTrue(np.all(np.isfinite(grad)), msg=str(grad))
        np.testing.assert_array_equal(grad[~mask], 0.0)
        # dH/dz_i = -p_i (log p_i + H) over the legal actions.
        for i in range(4):
            z = logits[i][mask[i]].astype(np.float64)
            p = np.exp(z - z.max())
            p /= p.sum()
            ref_grad = [-pj * (math.log(pj) + expected[i]) for pj in p]
            np.testing.assert_allclose(grad[i][mask[i]], ref_grad, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# KL estimators.
# ---------------------------------------------------------------------------------------------


class KLTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*SHAPES)
    def test_match_loop_reference(self, shape):
        rng = np.random.default_rng(40)
        lp = np.log(rng.uniform(0.01, 1.0, size=shape)).astype(np.float32)
        ref = np.log(rng.uniform(0.01, 1.0, size=shape)).astype(np.float32)
        for fn, ref_fn in ((losses.kl_k1, ref_k1), (losses.kl_k2, ref_k2), (losses.kl_k3, ref_k3)):
            out = self.variant(fn)(lp, ref)
            self.assertEqual(out.shape, shape)
            np.testing.assert_allclose(out, _elementwise(ref_fn, lp, ref), rtol=RTOL, atol=ATOL)
        k1 = np.asarray(self.variant(losses.kl_k1)(lp, ref))
        self.assertTrue((k1 < 0).any())  # k1 is negative for some samples
        # identical distributions: exactly zero for all three
        for fn in (losses.kl_k1, losses.kl_k2, losses.kl_k3):
            np.testing.assert_array_equal(self.variant(fn)(lp, lp), np.zeros(shape))

    @chex.variants(with_jit=True, without_jit=True)
    def test_k2_k3_never_negative(self):
        # d = ref - lp on a dense float32 grid of tiny differences, both signs, plus large ones.
        small = np.logspace(-8, -3, 1500)
        large = np.concatenate([np.logspace(-3, 1, 300), [20.0, 50.0, 80.0, 87.0]])
        d = np.concatenate([small, -small, large, -large, [0.0]]).astype(np.float32)
        bases = np.array([0.0, -0.7, -3.0, -12.5], np.float32)
        lp = np.repeat(bases, d.size)
        ref = (lp + np.tile(d, bases.size)).astype(np.float32)
        k3 = np.asarray(self.variant(losses.kl_k3)(lp, ref))
        k2 = np.asarray(self.variant(losses.kl_k2)(lp, ref))
        self.assertTrue(np.all(np.isfinite(k3)))
        self.assertTrue(np.all(k3 >= 0.0), msg=str(np.sort(k3)[:5]))
        self.assertTrue(np.all(k2 >= 0.0))
        # ... and still accurate: k3 ~ d^2 / 2 near zero (loose: float32 cancellation in d).
        d_exact = ref.astype(np.float64) - lp.astype(np.float64)
        ref_k3_vals = _elementwise(ref_k3, lp, ref)
        np.testing.assert_allclose(k3, ref_k3_vals, rtol=1e-4, atol=1e-7)
        self.assertTrue(np.all(np.abs(d_exact) < 100))

    @chex.variants(with_jit=True, without_jit=True)
    def test_sample_means_approach_exact_kl(self):
        p = np.array([0.6, 0.3, 0.07, 0.02, 0.01])
        q = np.array([0.1, 0.2, 0.2, 0.2, 0.3])
        exact = sum(p[i] * math.log(p[i] / q[i]) for i in range(len(p)))
        reverse = sum(q[i] * math.log(q[i] / p[i]) for i in range(len(p)))
        self.assertGreater(abs(exact - reverse), 0.2)  # a sign mix-up would show
        n = 200_000
        samples = np.random.default_rng(41).choice(len(p), size=n, p=p)
        lp = np.log(p)[samples].astype(np.float32)
        ref = np.log(q)[samples].astype(np.float32)
        for fn in (losses.kl_k1, losses.kl_k3):
            vals = np.asarray(self.variant(fn)(lp, ref), np.float64)
            tol = 5 * vals.std() / math.sqrt(n)  # five standard errors
            self.assertLess(tol, 0.05 * exact)
            self.assertAlmostEqual(vals.mean(), exact, delta=tol)
        # k2 is biased: it does not converge to the KL for these far-apart distributions.
        k2 = np.asarray(self.variant(losses.kl_k2)(lp, ref), np.float64)
        self.assertGreater(abs(k2.mean() - exact), 0.05)


@pytest.mark.parametrize(
    "cls", [MaskedReductionTest, SurrogateTest, ValueLossTest, EntropyTest, KLTest]
)
def test_both_variants_generated(cls):
    names = [n for n in dir(cls) if n.startswith("test_")]
    with_jit = {n.replace("with_jit", "") for n in names if "with_jit" in n and "without" not in n}
    without_jit = {n.replace("without_jit", "") for n in names if "without_jit" in n}
    assert with_jit and with_jit == without_jit
