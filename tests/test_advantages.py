"""Tests for purejaxpo.advantages against plain NumPy float64 loop references.

Every reference below is written from the docstring formulas as explicit Python loops over
time / environments / groups / elements, in float64; the JAX code runs in float32, so results
are compared with rtol = atol = 1e-5 unless a comment says otherwise. Each test that calls the
library goes through ``self.variant`` and so runs both jitted and not jitted.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from purejaxpo import advantages as adv

RTOL = 1e-5
ATOL = 1e-5


# ---------------------------------------------------------------------------------------------
# Loop references (float64).
# ---------------------------------------------------------------------------------------------


def _as_2d(x):
    x = np.asarray(x)
    return x[:, None] if x.ndim == 1 else x


def ref_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """GAE from the docstring: backwards loop per environment, float64."""
    one_d = np.ndim(rewards) == 1
    r = _as_2d(rewards).astype(np.float64)
    v = _as_2d(values).astype(np.float64)
    nv = _as_2d(next_values).astype(np.float64)
    term = _as_2d(terminated).astype(bool)
    trunc = _as_2d(truncated).astype(bool)
    gamma, lam = float(gamma), float(lam)
    T, B = r.shape
    out = np.zeros((T, B), np.float64)
    for b in range(B):
        for t in reversed(range(T)):
            bootstrap = 0.0 if term[t, b] else nv[t, b]
            delta = r[t, b] + gamma * bootstrap - v[t, b]
            if t == T - 1 or term[t, b] or trunc[t, b]:
                carry = 0.0
            else:
                carry = out[t + 1, b]
            out[t, b] = delta + gamma * lam * carry
    targets = out + v
    if one_d:
        return out[:, 0], targets[:, 0]
    return out, targets


def ref_returns(rewards, next_values, terminated, truncated, gamma):
    """Discounted returns from the docstring: backwards loop per environment, float64."""
    one_d = np.ndim(rewards) == 1
    r = _as_2d(rewards).astype(np.float64)
    nv = _as_2d(next_values).astype(np.float64)
    term = _as_2d(terminated).astype(bool)
    trunc = _as_2d(truncated).astype(bool)
    gamma = float(gamma)
    T, B = r.shape
    out = np.zeros((T, B), np.float64)
    for b in range(B):
        for t in reversed(range(T)):
            if trunc[t, b] or t == T - 1:
                boot = nv[t, b]
            else:
                boot = out[t + 1, b]
            if term[t, b]:
                boot = 0.0
            out[t, b] = r[t, b] + gamma * boot
    return out[:, 0] if one_d else out


def ref_mc_returns_forward(rewards, terminated, truncated, gamma):
    """Monte-Carlo returns with zero bootstrap, as a *forward* sum over each episode's rest."""
    one_d = np.ndim(rewards) == 1
    r = _as_2d(rewards).astype(np.float64)
    term = _as_2d(terminated).astype(bool)
    trunc = _as_2d(truncated).astype(bool)
    T, B = r.shape
    out = np.zeros((T, B), np.float64)
    for b in range(B):
        for t in range(T):
            total, disc = 0.0, 1.0
            for k in range(t, T):
                total += disc * r[k, b]
                if term[k, b] or trunc[k, b]:
                    break
                disc *= gamma
            out[t, b] = total
    return out[:, 0] if one_d else out


def ref_group_advantages(rewards, scale, ddof, eps):
    r = np.asarray(rewards, np.float64)
    B, G = r.shape
    out = np.zeros((B, G), np.float64)
    for b in range(B):
        row = [float(x) for x in r[b]]
        if all(x == row[0] for x in row):
            continue  # identical rewards (and G = 1): exactly zero
        mean = 0.0
        for x in row:
            mean += x
        mean /= G
        if scale == "std":
            ss = 0.0
            for x in row:
                ss += (x - mean) ** 2
            std = (ss / max(G - ddof, 1)) ** 0.5
            for j in range(G):
                out[b, j] = (row[j] - mean) / (std + eps)
        else:
            for j in range(G):
                out[b, j] = row[j] - mean
    return out


def ref_rloo(rewards):
    """RLOO from the definition: each reward minus the mean of the *other* rewards, float64."""
    r = np.asarray(rewards, np.float64)
    B, G = r.shape
    out = np.zeros((B, G), np.float64)
    for b in range(B):
        for j in range(G):
            others = 0.0
            for k in range(G):
                if k != j:
                    others += r[b, k]
            out[b, j] = r[b, j] - others / (G - 1)
    return out


def ref_reinforce_pp(rewards, token_kl, mask, kl_coef, gamma=1.0, eps=1e-8):
    """REINFORCE++ from the docstring: per-token rewards, backwards return loop per sequence,
    then mean / population std over every valid token of the batch, float64."""
    r = np.asarray(rewards, np.float64)
    kl = np.asarray(token_kl, np.float64)
    m = np.asarray(mask).astype(bool)
    B, N = m.shape
    returns = np.zeros((B, N), np.float64)
    for b in range(B):
        valid = [t for t in range(N) if m[b, t]]
        token_r = [0.0] * N
        for t in valid:
            token_r[t] = -kl_coef * kl[b, t]
        if valid:
            token_r[valid[-1]] += r[b]
        running = 0.0
        for t in reversed(valid):  # the counted tokens: holes (tool results) are no steps
            running = token_r[t] + gamma * running
            returns[b, t] = running
    values = [returns[b, t] for b in range(B) for t in range(N) if m[b, t]]
    out = np.zeros((B, N), np.float64)
    if not values or all(v == values[0] for v in values):
        return out
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    for b in range(B):
        for t in range(N):
            if m[b, t]:
                out[b, t] = (returns[b, t] - mean) / (std + eps)
    return out


def ref_normalize(x, mask=None, eps=1e-8):
    x = np.asarray(x, np.float64)
    flat = x.reshape(-1)
    keep = np.ones(flat.shape, bool) if mask is None else np.asarray(mask).reshape(-1).astype(bool)
    n, total = 0, 0.0
    for i in range(flat.size):
        if keep[i]:
            n += 1
            total += flat[i]
    mean = total / max(n, 1)
    ss = 0.0
    for i in range(flat.size):
        if keep[i]:
            ss += (flat[i] - mean) ** 2
    std = (ss / max(n, 1)) ** 0.5
    out = np.zeros(flat.shape, np.float64)
    for i in range(flat.size):
        if keep[i]:
            out[i] = (flat[i] - mean) / (std + eps)
    return out.reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# Random rollouts.
# ---------------------------------------------------------------------------------------------


def _flags(rng, shape, p_term=0.2, p_trunc=0.2):
    """Random terminated / truncated flags with the awkward cases forced in.

    In the first environment (or the only one): consecutive dones (t = 1 terminated, t = 2
    truncated, t = 3 both), and truncation at the last step. With several environments, one
    ends terminated at the last step and one never ends.
    """
    term = rng.random(shape) < p_term
    trunc = rng.random(shape) < p_trunc
    T = shape[0]
    t2 = term if term.ndim == 2 else term[:, None]
    u2 = trunc if trunc.ndim == 2 else trunc[:, None]
    if T >= 5:
        t2[1, 0], u2[1, 0] = True, False
        t2[2, 0], u2[2, 0] = False, True
        t2[3, 0], u2[3, 0] = True, True
    t2[-1, 0], u2[-1, 0] = False, True
    if t2.shape[1] >= 3:
        t2[-1, 1], u2[-1, 1] = True, False
        t2[:, 2], u2[:, 2] = False, False
    return term, trunc


def _rollout(seed, shape, flag_dtype=bool, consistent=True):
    """Random rewards / values / next_values / flags, all float32 (flags as ``flag_dtype``).

    With ``consistent``, next_values[t] == values[t + 1] on non-done steps, as in a real
    rollout; the final-observation value at done steps and at the last step is independent.
    """
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=shape).astype(np.float32)
    values = rng.normal(size=shape).astype(np.float32)
    next_values = rng.normal(size=shape).astype(np.float32)
    term, trunc = _flags(rng, shape)
    if consistent:
        done = term | trunc
        next_values[:-1] = np.where(done[:-1], next_values[:-1], values[1:])
    return (
        rewards,
        values,
        next_values,
        term.astype(flag_dtype),
        trunc.astype(flag_dtype),
    )


# Few distinct shapes on purpose: un-jitted JAX compiles every op once per new shape, which is
# most of this file's run time.
SHAPES = [
    ("T", (9,)),
    ("T1", (1,)),
    ("TxB", (8, 4)),
    ("T1xB", (1, 3)),
]


# ---------------------------------------------------------------------------------------------
# GAE.
# ---------------------------------------------------------------------------------------------


class GaeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        *[(f"{name}_bool", shape, bool, 0.99, 0.95, 0) for name, shape in SHAPES],
        ("TxB_float_flags", (8, 4), np.float32, 0.9, 0.8, 1),
        ("TxB_gamma1_lam1", (8, 4), bool, 1.0, 1.0, 2),
        ("TxB_gamma0", (8, 4), bool, 0.0, 0.95, 3),
        ("TxB_lam0", (8, 4), bool, 0.97, 0.0, 4),
    )
    def test_matches_loop_reference(self, shape, flag_dtype, gamma, lam, seed):
        # next_values independent of values everywhere: the formula must not assume a rollout.
        data = _rollout(seed, shape, flag_dtype, consistent=False)
        fn = self.variant(adv.gae)
        a, targets = fn(*[jnp.asarray(x) for x in data], gamma, lam)
        ref_a, ref_targets = ref_gae(*data, gamma, lam)
        self.assertEqual(a.shape, shape)
        self.assertEqual(a.dtype, jnp.float32)
        np.testing.assert_allclose(a, ref_a, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(targets, ref_targets, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("T", (9,), 0.99), ("TxB", (8, 4), 0.9), ("T1xB", (1, 3), 0.95)
    )
    def test_lambda_one_is_returns_minus_values(self, shape, gamma):
        r, v, nv, term, trunc = _rollout(10, shape, consistent=True)
        gae_fn = self.variant(adv.gae)
        a, targets = gae_fn(r, v, nv, term, trunc, gamma, 1.0)
        returns = adv.discounted_returns(r, nv, term, trunc, gamma)
        np.testing.assert_allclose(a, np.asarray(returns) - v, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(targets, returns, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("T", (9,)), ("TxB", (8, 4)))
    def test_lambda_zero_is_one_step_td_error(self, shape):
        r, v, nv, term, trunc = _rollout(11, shape, consistent=False)
        gamma = 0.9
        a, _ = self.variant(adv.gae)(r, v, nv, term, trunc, gamma, 0.0)
        r64, v64, nv64 = (x.astype(np.float64) for x in (r, v, nv))
        td = r64 + gamma * (1.0 - term.astype(np.float64)) * nv64 - v64
        np.testing.assert_allclose(a, td, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_computed_truncated_vs_terminated(self):
        # gamma = 0.5, lambda = 0.5 (gamma * lambda = 0.25); every number is exact in binary.
        # Episode cut at t = 1 whose final observation has value 10; t = 2 bootstraps from 4.
        rewards = jnp.array([1.0, 1.0, 1.0])
        values = jnp.array([1.0, 2.0, 3.0])
        next_values = jnp.array([2.0, 10.0, 4.0])
        none_ = jnp.array([False, False, False])
        at_1 = jnp.array([False, True, False])
        fn = self.variant(adv.gae)
        # deltas: t0 = 1 + .5*2 - 1 = 1; t2 = 1 + .5*4 - 3 = 0.
        # terminated at 1: delta1 = 1 - 2 = -1, A = [1 + .25*-1, -1, 0] = [.75, -1, 0].
        a, t = fn(rewards, values, next_values, at_1, none_, 0.5, 0.5)
        np.testing.assert_array_equal(a, [0.75, -1.0, 0.0])
        np.testing.assert_array_equal(t, [1.75, 1.0, 3.0])
        # truncated at 1: delta1 = 1 + .5*10 - 2 = 4, A = [1 + .25*4, 4, 0] = [2, 4, 0].
        a, t = fn(rewards, values, next_values, none_, at_1, 0.5, 0.5)
        np.testing.assert_array_equal(a, [2.0, 4.0, 0.0])
        np.testing.assert_array_equal(t, [3.0, 6.0, 3.0])
        # both flags: termination wins (no bootstrap).
        a, _ = fn(rewards, values, next_values, at_1, at_1, 0.5, 0.5)
        np.testing.assert_array_equal(a, [0.75, -1.0, 0.0])
        # no episode end: delta1 = 1 + .5*10 - 2 = 4 and the trace runs through:
        # A2 = 0, A1 = 4, A0 = 1 + .25*4 = 2 -- and with lambda = 1: A0 = 1 + .5*4 = 3.
        a, _ = fn(rewards, values, next_values, none_, none_, 0.5, 1.0)
        np.testing.assert_array_equal(a, [3.0, 4.0, 0.0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_truncated_last_step_bootstraps(self):
        # T = 1: the only step is the last one; truncated bootstraps, terminated does not.
        r, v, nv = jnp.array([1.0]), jnp.array([0.5]), jnp.array([4.0])
        yes, no = jnp.array([True]), jnp.array([False])
        fn = self.variant(adv.gae)
        a_trunc, _ = fn(r, v, nv, no, yes, 0.5, 0.9)
        a_plain, _ = fn(r, v, nv, no, no, 0.5, 0.9)
        a_term, _ = fn(r, v, nv, yes, no, 0.5, 0.9)
        np.testing.assert_array_equal(a_trunc, [2.5])  # 1 + .5*4 - .5
        np.testing.assert_array_equal(a_plain, [2.5])
        np.testing.assert_array_equal(a_term, [0.5])  # 1 - .5

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_gamma_and_lambda(self):
        r, v, nv, term, trunc = _rollout(12, (8, 3), consistent=False)
        gammas = jnp.array([0.0, 0.5, 0.9, 0.99, 1.0], jnp.float32)
        lams = jnp.array([1.0, 0.0, 0.95, 0.5, 0.3], jnp.float32)

        def per_hparams(g, lam):
            return adv.gae(r, v, nv, term, trunc, g, lam)

        a_batched, t_batched = self.variant(jax.vmap(per_hparams))(gammas, lams)
        self.assertEqual(a_batched.shape, (5, 8, 3))
        for i in range(len(gammas)):
            a_i, t_i = adv.gae(r, v, nv, term, trunc, float(gammas[i]), float(lams[i]))
            np.testing.assert_allclose(a_batched[i], a_i, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(t_batched[i], t_i, rtol=RTOL, atol=ATOL)
            ref_a, _ = ref_gae(r, v, nv, term, trunc, float(gammas[i]), float(lams[i]))
            np.testing.assert_allclose(a_batched[i], ref_a, rtol=RTOL, atol=ATOL)

    def test_rejects_bad_shapes(self):
        r = jnp.zeros((4, 2))
        f = jnp.zeros((4, 2), bool)
        with self.assertRaises(AssertionError):
            adv.gae(r, r, jnp.zeros((4, 3)), f, f, 0.9, 0.9)
        with self.assertRaises(AssertionError):
            z = jnp.zeros((4, 2, 2))
            adv.gae(z, z, z, z.astype(bool), z.astype(bool), 0.9, 0.9)


# ---------------------------------------------------------------------------------------------
# Discounted returns.
# ---------------------------------------------------------------------------------------------


class DiscountedReturnsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        *[(name, shape, bool, 0.97, 20) for name, shape in SHAPES],
        ("TxB_float_flags", (8, 4), np.float32, 0.9, 21),
        ("TxB_gamma1", (8, 4), bool, 1.0, 22),
        ("TxB_gamma0", (8, 4), bool, 0.0, 23),
    )
    def test_matches_loop_reference(self, shape, flag_dtype, gamma, seed):
        r, _, nv, term, trunc = _rollout(seed, shape, flag_dtype, consistent=False)
        out = self.variant(adv.discounted_returns)(r, nv, term, trunc, gamma)
        self.assertEqual(out.shape, shape)
        np.testing.assert_allclose(out, ref_returns(r, nv, term, trunc, gamma), rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("T", (9,)), ("TxB", (8, 4)))
    def test_zero_bootstrap_is_monte_carlo_forward_sum(self, shape):
        r, _, _, term, trunc = _rollout(24, shape)
        zeros = np.zeros(shape, np.float32)
        out = self.variant(adv.discounted_returns)(r, zeros, term, trunc, 0.9)
        np.testing.assert_allclose(
            out, ref_mc_returns_forward(r, term, trunc, 0.9), rtol=RTOL, atol=ATOL
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_computed_truncated_vs_terminated(self):
        rewards = jnp.array([1.0, 1.0, 1.0])
        next_values = jnp.array([2.0, 10.0, 4.0])
        none_ = jnp.array([False, False, False])
        at_1 = jnp.array([False, True, False])
        fn = self.variant(adv.discounted_returns)
        # G2 = 1 + .5*4 = 3 in every case (last step bootstraps from next_values[2]).
        # terminated at 1: G1 = 1, G0 = 1 + .5*1 = 1.5.
        np.testing.assert_array_equal(fn(rewards, next_values, at_1, none_, 0.5), [1.5, 1.0, 3.0])
        # truncated at 1: G1 = 1 + .5*10 = 6, G0 = 1 + .5*6 = 4.
        np.testing.assert_array_equal(fn(rewards, next_values, none_, at_1, 0.5), [4.0, 6.0, 3.0])
        # both: terminated wins.
        np.testing.assert_array_equal(fn(rewards, next_values, at_1, at_1, 0.5), [1.5, 1.0, 3.0])
        # no end: next_values[0:2] are ignored, G1 = 1 + .5*3 = 2.5, G0 = 1 + .5*2.5 = 2.25.
        np.testing.assert_array_equal(
            fn(rewards, next_values, none_, none_, 0.5), [2.25, 2.5, 3.0]
        )
        # terminated at the last step: no bootstrap from next_values[2].
        at_2 = jnp.array([False, False, True])
        np.testing.assert_array_equal(fn(rewards, next_values, at_2, none_, 0.5), [1.75, 1.5, 1.0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_gamma(self):
        r, _, nv, term, trunc = _rollout(25, (8, 3))
        gammas = jnp.array([0.0, 0.5, 0.9, 0.99, 1.0], jnp.float32)
        batched = self.variant(
            jax.vmap(lambda g: adv.discounted_returns(r, nv, term, trunc, g))
        )(gammas)
        for i in range(len(gammas)):
            single = adv.discounted_returns(r, nv, term, trunc, float(gammas[i]))
            np.testing.assert_allclose(batched[i], single, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(
                batched[i], ref_returns(r, nv, term, trunc, float(gammas[i])), rtol=RTOL, atol=ATOL
            )


# ---------------------------------------------------------------------------------------------
# Group advantages.
# ---------------------------------------------------------------------------------------------


def _group_rewards(seed, shape):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=shape).astype(np.float32)
    if shape[0] >= 3 and shape[1] >= 2:
        r[1] = 0.1  # identical rewards whose float32 mean is not exactly 0.1 for most G
        r[2] = rng.integers(0, 2, size=shape[1])  # binary (pass/fail) rewards
        r[2, 0], r[2, 1] = 0.0, 1.0  # ... with some spread
    return r


class GroupAdvantagesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("std_ddof1", (5, 8), "std", 1, 1e-6),
        ("std_ddof0", (5, 8), "std", 0, 1e-6),
        ("std_ddof1_G2", (4, 2), "std", 1, 1e-6),
        ("std_ddof0_big_eps", (5, 8), "std", 0, 0.5),
        ("none", (5, 8), "none", 1, 1e-6),
        ("none_G2", (4, 2), "none", 1, 1e-6),
    )
    def test_matches_loop_reference(self, shape, scale, ddof, eps):
        r = _group_rewards(30 + shape[1], shape)
        fn = self.variant(functools.partial(adv.group_advantages, scale=scale, ddof=ddof, eps=eps))
        out = fn(jnp.asarray(r))
        self.assertEqual(out.shape, shape)
        np.testing.assert_allclose(out, ref_group_advantages(r, scale, ddof, eps), rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("std", "std"), ("none", "none"))
    def test_identical_rewards_give_exact_zero(self, scale):
        group_sizes = (7, 10)
        constants = (0.1, 0.3, 0.7, 1.0, 0.0, -3.7, 1e-3, 12345.678)
        # Sanity check of the test itself: 0.1 repeated does not average exactly to 0.1 in
        # float32 for these group sizes, so "centred == 0" alone would not give exact zeros.
        for g in group_sizes:
            row = jnp.full((1, g), 0.1, jnp.float32)
            self.assertNotEqual(float(jnp.mean(row, axis=1)[0]), float(np.float32(0.1)))
        fn = self.variant(functools.partial(adv.group_advantages, scale=scale))
        for g in group_sizes:
            rows = np.stack([np.full(g, c, np.float32) for c in constants])
            mixed = np.concatenate([rows, np.arange(g, dtype=np.float32)[None]], axis=0)
            out = np.asarray(fn(jnp.asarray(mixed)))
            self.assertTrue(np.all(out[:-1] == 0.0), msg=f"G={g}: {out[:-1]}")
            self.assertFalse(np.any(np.isnan(out)))
            # the spread-out row is untouched by the zero-spread rows next to it
            self.assertTrue(np.all(out[-1] != 0.0) or g % 2 == 1)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("std_ddof1", "std", 1), ("std_ddof0", "std", 0), ("none", "none", 1))
    def test_group_of_one_is_zero(self, scale, ddof):
        r = jnp.asarray(np.random.default_rng(31).normal(size=(5, 1)).astype(np.float32))
        out = self.variant(functools.partial(adv.group_advantages, scale=scale, ddof=ddof))(r)
        self.assertEqual(out.shape, (5, 1))
        self.assertTrue(np.all(np.asarray(out) == 0.0))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("std", "std"), ("none", "none"))
    def test_gradients_finite_and_correct(self, scale):
        # Rows: random, identical 1.0, identical 0.1, binary; plus a separate G = 1 batch.
        r = np.random.default_rng(32).normal(size=(5, 8)).astype(np.float32)
        r[1], r[2], r[3] = 1.0, 0.1, [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
        w = np.random.default_rng(33).normal(size=r.shape).astype(np.float32)

        def objective(x):
            return jnp.sum(jnp.asarray(w) * adv.group_advantages(x, scale=scale))

        g = np.asarray(self.variant(jax.grad(objective))(jnp.asarray(r)))
        self.assertTrue(np.all(np.isfinite(g)), msg=str(g))
        np.testing.assert_array_equal(g[1:3], 0.0)  # zero-spread rows are constant zero
        # Central differences of the float64 loop reference on the rows with spread.
        h = 1e-6
        fd = np.zeros_like(g, dtype=np.float64)
        for b in (0, 3, 4):
            for j in range(r.shape[1]):
                up, down = r.astype(np.float64), r.astype(np.float64)
                up[b, j] += h
                down[b, j] -= h
                f_up = np.sum(w * ref_group_advantages(up, scale, 1, 1e-6))
                f_down = np.sum(w * ref_group_advantages(down, scale, 1, 1e-6))
                fd[b, j] = (f_up - f_down) / (2 * h)
        np.testing.assert_allclose(g[[0, 3, 4]], fd[[0, 3, 4]], rtol=1e-3, atol=1e-3)
        # G = 1: finite (and zero) gradient too.
        r1 = jnp.asarray(r[:, :1])
        g1 = self.variant(jax.grad(lambda x: jnp.sum(adv.group_advantages(x, scale=scale))))(r1)
        np.testing.assert_array_equal(np.asarray(g1), 0.0)

    def test_rejects_bad_arguments(self):
        with self.assertRaises(ValueError):
            adv.group_advantages(jnp.zeros((2, 3)), scale="mad")
        with self.assertRaises(AssertionError):
            adv.group_advantages(jnp.zeros((6,)))


# ---------------------------------------------------------------------------------------------
# normalize.
# ---------------------------------------------------------------------------------------------


class NormalizeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("N", (17,)), ("TxB", (6, 5)))
    def test_unmasked_matches_loop_reference(self, shape):
        x = (np.random.default_rng(40).normal(size=shape) * 3 + 2).astype(np.float32)
        out = self.variant(adv.normalize)(x)
        np.testing.assert_allclose(out, ref_normalize(x), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(np.mean(np.asarray(out, np.float64)), 0.0, atol=1e-6)
        np.testing.assert_allclose(np.std(np.asarray(out, np.float64)), 1.0, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("N", (17,)), ("TxB", (6, 5)))
    def test_masked_ignores_masked_out_elements(self, shape):
        rng = np.random.default_rng(41)
        x = (rng.normal(size=shape) * 3 + 2).astype(np.float32)
        mask = rng.random(shape) < 0.6
        mask.reshape(-1)[:2] = [True, False]
        fn = self.variant(adv.normalize)
        out = np.asarray(fn(x, mask))
        np.testing.assert_allclose(out, ref_normalize(x, mask), rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(out[~mask], 0.0)
        kept = out[mask].astype(np.float64)
        np.testing.assert_allclose(kept.mean(), 0.0, atol=1e-6)
        np.testing.assert_allclose(kept.std(), 1.0, atol=1e-5)
        # Whatever sits in the masked-out slots (huge, inf, NaN padding) changes nothing.
        for junk in (1e6, np.inf, -np.inf, np.nan):
            y = np.where(mask, x, np.float32(junk)).astype(np.float32)
            np.testing.assert_array_equal(np.asarray(fn(y, mask)), out)

    @chex.variants(with_jit=True, without_jit=True)
    def test_all_false_mask_gives_zeros(self):
        x = np.random.default_rng(42).normal(size=(6, 5)).astype(np.float32)
        out = self.variant(adv.normalize)(x, np.zeros((6, 5), bool))
        np.testing.assert_array_equal(out, np.zeros((6, 5)))
        # and a single kept element normalises to 0 (zero spread), not NaN
        one = np.zeros((6, 5), bool)
        one[2, 3] = True
        np.testing.assert_array_equal(self.variant(adv.normalize)(x, one), np.zeros((6, 5)))

    @chex.variants(with_jit=True, without_jit=True)
    def test_constant_input_is_zero_not_nan(self):
        x = np.full((17,), 3.25, np.float32)
        out = self.variant(adv.normalize)(x)
        np.testing.assert_array_equal(out, np.zeros(17))


# ---------------------------------------------------------------------------------------------
# RLOO.
# ---------------------------------------------------------------------------------------------


class RlooAdvantagesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("G8", (5, 8)), ("G2", (4, 2)), ("G3", (6, 3)))
    def test_matches_loop_reference(self, shape):
        r = _group_rewards(50 + shape[1], shape)
        out = self.variant(adv.rloo_advantages)(jnp.asarray(r))
        self.assertEqual(out.shape, shape)
        np.testing.assert_allclose(out, ref_rloo(r), rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_is_rescaled_dr_grpo(self):
        # A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean_j r_j): Dr. GRPO's
        # advantages (scale="none") times G / (G - 1).
        for g in (2, 5, 8):
            r = np.random.default_rng(51 + g).normal(size=(4, g)).astype(np.float32)
            out = np.asarray(self.variant(adv.rloo_advantages)(jnp.asarray(r)), np.float64)
            r64 = r.astype(np.float64)
            want = g / (g - 1) * (r64 - r64.mean(axis=1, keepdims=True))
            np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL)
            dr = np.asarray(adv.group_advantages(jnp.asarray(r), scale="none"), np.float64)
            np.testing.assert_allclose(out, g / (g - 1) * dr, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(out.sum(axis=1), 0.0, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_identical_rewards_give_exact_zero(self):
        constants = (0.1, 0.3, 0.7, 1.0, 0.0, -3.7, 1e-3, 12345.678)
        for g in (7, 10):
            rows = np.stack([np.full(g, c, np.float32) for c in constants])
            mixed = np.concatenate([rows, np.arange(g, dtype=np.float32)[None]], axis=0)
            out = np.asarray(self.variant(adv.rloo_advantages)(jnp.asarray(mixed)))
            self.assertTrue(np.all(out[:-1] == 0.0), msg=f"G={g}: {out[:-1]}")
            np.testing.assert_allclose(out[-1], ref_rloo(mixed[-1:])[0], rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_finite(self):
        r = _group_rewards(52, (5, 4))
        w = np.random.default_rng(53).normal(size=r.shape).astype(np.float32)
        g = np.asarray(self.variant(jax.grad(
            lambda x: jnp.sum(jnp.asarray(w) * adv.rloo_advantages(x))))(jnp.asarray(r)))
        self.assertTrue(np.all(np.isfinite(g)))
        np.testing.assert_array_equal(g[1], 0.0)  # the tied row is constant zero
        # Linear map on rows with spread: d/dr_k sum_j w_j A_j = (G w_k - sum w) / (G - 1).
        G = r.shape[1]
        want = (G * w - w.sum(axis=1, keepdims=True)) / (G - 1)
        np.testing.assert_allclose(g[[0, 2, 3, 4]], want[[0, 2, 3, 4]], rtol=1e-5, atol=1e-5)

    def test_rejects_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "group_size=1.*>= 2"):
            adv.rloo_advantages(jnp.zeros((3, 1)))
        with self.assertRaisesRegex(ValueError, "group_size=1"):
            jax.jit(adv.rloo_advantages)(jnp.zeros((3, 1)))  # raised while tracing, not NaN
        with self.assertRaises(AssertionError):
            adv.rloo_advantages(jnp.zeros((6,)))


# ---------------------------------------------------------------------------------------------
# REINFORCE++.
# ---------------------------------------------------------------------------------------------


def _token_batch(seed, B=6, N=7):
    """Sequence rewards, per-token KL and a prefix mask with one empty row and one full row."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=B).astype(np.float32)
    kl = rng.normal(0.0, 0.3, size=(B, N)).astype(np.float32)
    lengths = rng.integers(1, N, size=B)
    lengths[1], lengths[2] = 0, N  # an empty (filtered) row and one without padding
    mask = np.arange(N)[None, :] < lengths[:, None]
    return rewards, kl, mask


class ReinforcePPAdvantagesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("paper", 0.001, 1.0, 60),
        ("strong_kl", 0.5, 1.0, 61),
        ("no_kl", 0.0, 1.0, 62),
        ("discounted", 0.1, 0.9, 63),
    )
    def test_matches_loop_reference(self, kl_coef, gamma, seed):
        r, kl, mask = _token_batch(seed)
        fn = self.variant(functools.partial(adv.reinforce_pp_advantages, gamma=gamma))
        out = np.asarray(fn(r, kl, mask, kl_coef))
        self.assertEqual(out.shape, kl.shape)
        np.testing.assert_allclose(out, ref_reinforce_pp(r, kl, mask, kl_coef, gamma),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(out[~mask], 0.0)  # padding and the empty row
        kept = out[mask].astype(np.float64)
        np.testing.assert_allclose(kept.mean(), 0.0, atol=1e-5)
        np.testing.assert_allclose(kept.std(), 1.0, atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_mask_with_holes(self):
        # Not a prefix: the sequence reward goes on the last valid token; holes (tool results)
        # get no reward and are skipped by the discount.
        r, kl, _ = _token_batch(64)
        mask = np.random.default_rng(65).random(kl.shape) < 0.6
        mask[0] = False
        out = self.variant(adv.reinforce_pp_advantages)(r, kl, mask, 0.2, gamma=0.8)
        np.testing.assert_allclose(out, ref_reinforce_pp(r, kl, mask, 0.2, 0.8),
                                   rtol=1e-4, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_no_kl_is_normalised_sequence_reward(self):
        # kl_coef = 0, gamma = 1: every token carries its sequence's reward; the normalisation
        # is over tokens, so long sequences weigh more in the mean (not per group).
        r, kl, mask = _token_batch(66)
        out = self.variant(adv.reinforce_pp_advantages)(r, kl, mask, 0.0)
        broadcast = np.where(mask, r[:, None], 0.0)
        np.testing.assert_allclose(out, adv.normalize(jnp.asarray(broadcast), jnp.asarray(mask)),
                                   rtol=1e-5, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_equal_returns_and_empty_batches_give_exact_zero(self):
        fn = self.variant(adv.reinforce_pp_advantages)
        _, kl, mask = _token_batch(67)
        for c in (0.1, 0.7, -3.7, 12345.678):
            # Every sequence rewarded c, no KL: every return is c (whose float32 mean need not
            # be exactly c): exactly zero, not rounding noise / eps.
            out = np.asarray(fn(np.full(6, c, np.float32), kl, mask, 0.0))
            self.assertTrue(np.all(out == 0.0), msg=f"{c}: {out}")
        out = np.asarray(fn(np.ones(6, np.float32), kl, np.zeros_like(mask), 0.5))
        np.testing.assert_array_equal(out, 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_padding_junk_changes_nothing(self):
        r, kl, mask = _token_batch(68)
        fn = self.variant(adv.reinforce_pp_advantages)
        clean = np.asarray(fn(r, kl, mask, 0.3))
        for junk in (1e6, np.inf, np.nan):
            dirty = np.where(mask, kl, np.float32(junk)).astype(np.float32)
            np.testing.assert_array_equal(np.asarray(fn(r, dirty, mask, 0.3)), clean)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_kl_coef(self):
        r, kl, mask = _token_batch(69)
        coefs = jnp.array([0.0, 0.001, 0.1, 1.0], jnp.float32)
        batched = self.variant(jax.vmap(
            lambda c: adv.reinforce_pp_advantages(r, kl, mask, c)))(coefs)
        self.assertEqual(batched.shape, (4,) + kl.shape)
        for i, c in enumerate(coefs):
            np.testing.assert_allclose(batched[i], ref_reinforce_pp(r, kl, mask, float(c)),
                                       rtol=1e-4, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_finite(self):
        r, kl, mask = _token_batch(70)

        def total(rewards, coef):
            return jnp.sum(adv.reinforce_pp_advantages(rewards, kl, mask, coef))

        g_r, g_c = self.variant(jax.grad(total, argnums=(0, 1)))(jnp.asarray(r), 0.1)
        self.assertTrue(np.all(np.isfinite(g_r)) and np.isfinite(g_c))
        # Tied rewards and no KL: the zero-spread branch, still a finite (zero) gradient.
        g_tied = self.variant(jax.grad(total))(jnp.full(6, 0.1, jnp.float32), 0.0)
        np.testing.assert_array_equal(np.asarray(g_tied), 0.0)

    def test_rejects_bad_shapes(self):
        r, kl, mask = _token_batch(71)
        with self.assertRaises(AssertionError):
            adv.reinforce_pp_advantages(r[:-1], kl, mask, 0.1)
        with self.assertRaises(AssertionError):
            adv.reinforce_pp_advantages(r, kl, mask[:, :-1], 0.1)
        with self.assertRaises(AssertionError):
            adv.reinforce_pp_advantages(r[:, None], kl, mask, 0.1)


# ---------------------------------------------------------------------------------------------
# The tests above must really run both variants.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GaeTest, DiscountedReturnsTest, GroupAdvantagesTest, NormalizeTest,
                                 RlooAdvantagesTest, ReinforcePPAdvantagesTest])
def test_both_variants_generated(cls):
    names = [n for n in dir(cls) if n.startswith("test_")]
    with_jit = {n.replace("with_jit", "") for n in names if "with_jit" in n and "without" not in n}
    without_jit = {n.replace("without_jit", "") for n in names if "without_jit" in n}
    assert with_jit and with_jit == without_jit
