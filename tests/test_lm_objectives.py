"""GRPO-family token objectives against plain NumPy float64 implementations of each formula."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from purejaxpo.lm import objectives

B, N = 6, 5


def _inputs(seed=0, empty_row=False):
    rng = np.random.default_rng(seed)
    logp = -rng.uniform(0.05, 3.0, (B, N))
    old = logp + rng.normal(0, 0.3, (B, N))
    ref = logp + rng.normal(0, 0.5, (B, N))
    lengths = rng.integers(1, N + 1, B)
    mask = np.arange(N)[None, :] < lengths[:, None]
    if empty_row:
        mask[2] = False
    adv = rng.normal(size=B)
    return logp, old, ref, mask, adv


# -- NumPy references: loops over sequences and tokens, float64 ---------------------------


def np_ratio(logp, old, mask, level):
    out = np.ones_like(logp)
    for i in range(B):
        toks = [t for t in range(N) if mask[i, t]]
        if level == "sequence" and toks:
            s = np.exp(np.mean([logp[i, t] - old[i, t] for t in toks]))
        for t in toks:
            out[i, t] = s if level == "sequence" else np.exp(logp[i, t] - old[i, t])
    return out


def np_aggregate(x, mask, mode, normalizer=None):
    rows = [i for i in range(B) if mask[i].any()]
    if mode == "sequence_mean":
        return sum(np.mean([x[i, t] for t in range(N) if mask[i, t]]) for i in rows) / max(
            len(rows), 1)
    total = sum(x[i, t] for i in range(B) for t in range(N) if mask[i, t])
    if mode == "token_mean":
        return total / max(mask.sum(), 1)
    return total / (max(len(rows), 1) * (N if normalizer is None else normalizer))


def np_grpo_loss(logp, old, ref, mask, adv, clip_low, clip_high, beta, level, mode):
    ratio = np_ratio(logp, old, mask, level)
    per_token = np.zeros_like(logp)
    for i in range(B):
        for t in range(N):
            r, a = ratio[i, t], (adv[i, t] if np.ndim(adv) == 2 else adv[i])
            per_token[i, t] = -min(r * a, np.clip(r, 1 - clip_low, 1 + clip_high) * a)
            if ref is not None:
                d = ref[i, t] - logp[i, t]
                per_token[i, t] += beta * (np.exp(d) - 1 - d)
    return np_aggregate(per_token, mask, mode)


class ObjectivesTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(level=("token", "sequence"), empty_row=(False, True))
    def test_importance_ratio(self, level, empty_row):
        logp, old, _, mask, _ = _inputs(1, empty_row)
        fn = self.variant(lambda a, b, m: objectives.importance_ratio(a, b, m, level=level))
        got = fn(jnp.float32(logp), jnp.float32(old), jnp.asarray(mask))
        np.testing.assert_allclose(got, np_ratio(logp, old, mask, level), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(mode=("sequence_mean", "token_mean", "constant"),
                           empty_row=(False, True))
    def test_aggregate(self, mode, empty_row):
        x, _, _, mask, _ = _inputs(2, empty_row)
        got = self.variant(lambda a, m: objectives.aggregate(a, m, mode=mode))(
            jnp.float32(x), jnp.asarray(mask))
        np.testing.assert_allclose(got, np_aggregate(x, mask, mode), rtol=1e-5)

    def test_constant_normalizer(self):
        x, _, _, mask, _ = _inputs(3)
        got = objectives.aggregate(jnp.float32(x), jnp.asarray(mask), mode="constant",
                                   normalizer=32)
        np.testing.assert_allclose(got, np_aggregate(x, mask, "constant", 32), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(
        variant=(  # (level, aggregation, clip_low, clip_high, with_kl)
            ("token", "sequence_mean", 0.2, 0.2, True),     # GRPO
            ("token", "token_mean", 0.2, 0.28, False),      # DAPO
            ("token", "constant", 0.2, 0.2, True),          # Dr. GRPO
            ("sequence", "sequence_mean", 3e-4, 4e-4, False),  # GSPO
            ("token", "token_mean", 0.1, 0.3, True),        # BNPO, asymmetric clip, KL
        ),
        empty_row=(False, True))
    def test_grpo_loss(self, variant, empty_row):
        level, mode, lo, hi, with_kl = variant
        logp, old, ref, mask, adv = _inputs(4, empty_row)
        beta = 0.04
        fn = self.variant(lambda a, b, c, m, r: objectives.grpo_loss(
            a, b, c, m, clip_low=lo, clip_high=hi, ref_log_prob=r if with_kl else None,
            beta=beta, ratio_level=level, aggregation=mode)[0])
        got = fn(jnp.float32(logp), jnp.float32(old), jnp.float32(adv), jnp.asarray(mask),
                 jnp.float32(ref))
        want = np_grpo_loss(logp, old, ref if with_kl else None, mask, adv, lo, hi, beta, level,
                            mode)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(level=("token", "sequence"),
                           mode=("sequence_mean", "token_mean", "constant"))
    def test_grpo_loss_per_token_advantages(self, level, mode):
        """Genuinely per-token advantages (REINFORCE++) against the loop reference."""
        logp, old, ref, mask, _ = _inputs(9, empty_row=True)
        adv = np.random.default_rng(10).normal(size=(B, N))
        lo, hi = (0.2, 0.28) if level == "token" else (3e-4, 4e-4)
        fn = self.variant(lambda a, b, c, m, r: objectives.grpo_loss(
            a, b, c, m, clip_low=lo, clip_high=hi, ref_log_prob=r, beta=0.04,
            ratio_level=level, aggregation=mode)[0])
        got = fn(jnp.float32(logp), jnp.float32(old), jnp.float32(adv), jnp.asarray(mask),
                 jnp.float32(ref))
        want = np_grpo_loss(logp, old, ref, mask, adv, lo, hi, 0.04, level, mode)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        # and the tokens' own advantages matter: not the same as their sequence mean
        flat = np_grpo_loss(logp, old, ref, mask, adv.mean(axis=1), lo, hi, 0.04, level, mode)
        assert abs(want - flat) > 1e-3


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("mode", ["sequence_mean", "token_mean", "constant"])
@pytest.mark.parametrize("with_kl", [False, True])
def test_broadcast_per_token_advantages_equal_per_sequence(level, mode, with_kl):
    """``[B, N]`` advantages constant over each sequence: the same loss, metrics and gradient as
    the ``[B]`` ones, whatever sits at masked-out tokens."""
    logp, old, ref, mask, adv = _inputs(11, empty_row=True)
    junk = np.where(mask, adv[:, None], 1e3)  # padding values must be ignored

    def loss(lp, advantages):
        return objectives.grpo_loss(
            lp, jnp.float32(old), advantages, jnp.asarray(mask), clip_low=0.2, clip_high=0.28,
            ref_log_prob=jnp.float32(ref) if with_kl else None, beta=0.04, ratio_level=level,
            aggregation=mode)

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (l_seq, m_seq), g_seq = grad_fn(jnp.float32(logp), jnp.float32(adv))
    (l_tok, m_tok), g_tok = grad_fn(jnp.float32(logp), jnp.float32(junk))
    np.testing.assert_array_equal(l_tok, l_seq)
    np.testing.assert_array_equal(g_tok, g_seq)
    assert m_tok.keys() == m_seq.keys()
    for k in m_seq:
        np.testing.assert_array_equal(m_tok[k], m_seq[k])
    assert np.any(np.asarray(g_seq) != 0.0)


def test_gspo_token_gradient_with_per_token_advantages():
    """GSPO-token: d loss / d logp_it = -A_it * s_i / |y_i| / B_nonempty (unclipped region)."""
    logp, _, _, mask, _ = _inputs(12)
    old = logp + 1e-5 * np.random.default_rng(1).normal(size=logp.shape)
    adv = np.random.default_rng(2).normal(size=(B, N))
    grad = np.asarray(jax.grad(lambda lp: objectives.grpo_loss(
        lp, jnp.float32(old), jnp.float32(adv), jnp.asarray(mask), clip_low=0.2,
        clip_high=0.2, ratio_level="sequence", aggregation="sequence_mean")[0])(
            jnp.float32(logp)))
    for i in range(B):
        s = np.exp(np.mean((logp[i] - old[i])[mask[i]]))
        want = np.where(mask[i], -adv[i] * s / mask[i].sum() / B, 0.0)
        np.testing.assert_allclose(grad[i], want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("shape", [(B + 1,), (B, N + 1), (N, B), (B, N, 1), ()])
def test_bad_advantage_shapes_raise(shape):
    logp, old, _, mask, _ = _inputs(13)
    with pytest.raises(ValueError, match=r"advantages of shape .* per sequence \(6,\)"):
        objectives.grpo_loss(jnp.float32(logp), jnp.float32(old), jnp.zeros(shape),
                             jnp.asarray(mask), clip_low=0.2, clip_high=0.2)


def test_gspo_gradient_is_gradient_of_sequence_ratio():
    """GSPO: d loss / d logp_it = -A_i * s_i / |y_i| / B_nonempty (unclipped region)."""
    logp, old, _, mask, adv = _inputs(5)
    old = logp + 1e-5 * np.random.default_rng(0).normal(size=logp.shape)  # stay inside the clip

    def loss(lp):
        return objectives.grpo_loss(lp, jnp.float32(old), jnp.float32(adv), jnp.asarray(mask),
                                    clip_low=0.2, clip_high=0.2, ratio_level="sequence",
                                    aggregation="sequence_mean")[0]

    grad = np.asarray(jax.grad(loss)(jnp.float32(logp)))
    for i in range(B):
        toks = mask[i].sum()
        s = np.exp(np.mean((logp[i] - old[i])[mask[i]]))
        want = np.where(mask[i], -adv[i] * s / toks / B, 0.0)
        np.testing.assert_allclose(grad[i], want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("mode", ["sequence_mean", "token_mean", "constant"])
def test_zero_advantage_gives_exactly_zero_policy_gradient(level, mode):
    """A group with identical rewards has advantage 0: no gradient at all (beta = 0)."""
    logp, old, _, mask, _ = _inputs(6)
    adv = jnp.zeros(B)
    grad = jax.grad(lambda lp: objectives.grpo_loss(
        lp, jnp.float32(old), adv, jnp.asarray(mask), clip_low=0.2, clip_high=0.28,
        ratio_level=level, aggregation=mode)[0])(jnp.float32(logp))
    assert np.all(np.asarray(grad) == 0.0)


def test_ratio_one_gives_policy_gradient():
    """With old = current (stop-gradient), GRPO's gradient is the masked policy gradient."""
    logp, _, _, mask, adv = _inputs(7)

    def loss(lp):
        return objectives.grpo_loss(lp, jax.lax.stop_gradient(lp), jnp.float32(adv),
                                    jnp.asarray(mask), clip_low=0.2, clip_high=0.2,
                                    aggregation="token_mean")[0]

    grad = np.asarray(jax.grad(loss)(jnp.float32(logp)))
    want = np.where(mask, -adv[:, None] / mask.sum(), 0.0)
    np.testing.assert_allclose(grad, want, rtol=1e-5)


def test_sft_loss_is_masked_nll():
    logp, _, _, mask, _ = _inputs(8)
    want = -sum(logp[i, t] for i in range(B) for t in range(N) if mask[i, t]) / mask.sum()
    np.testing.assert_allclose(objectives.sft_loss(jnp.float32(logp), jnp.asarray(mask)), want,
                               rtol=1e-5)


def test_bad_names_raise():
    x = jnp.zeros((2, 3))
    m = jnp.ones((2, 3), bool)
    with pytest.raises(ValueError, match="aggregation"):
        objectives.aggregate(x, m, mode="mean")
    with pytest.raises(ValueError, match="ratio level"):
        objectives.importance_ratio(x, x, m, level="sentence")
