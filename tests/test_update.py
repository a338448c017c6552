"""The shared update loop's minibatch shuffle (``purejaxpo.update.minibatch_permutation``)."""

import chex
import jax
import numpy as np
import pytest
from scipy import stats

from purejaxpo import update
from purejaxpo.update import minibatch_permutation, shuffled_minibatches


class PermutationTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_every_index_exactly_once(self):
        for n in (1, 2, 3, 7, 128, 512, 1000, 4096, 1 << 16, (1 << 16) + 1):
            fn = self.variant(lambda key, n=n: minibatch_permutation(key, n))
            perm = np.asarray(fn(jax.random.PRNGKey(n)))
            assert perm.dtype == np.int32
            np.testing.assert_array_equal(np.sort(perm), np.arange(n))


def test_vmapped_keys_give_different_permutations():
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    perms = np.asarray(jax.vmap(minibatch_permutation, in_axes=(0, None))(keys, 512))
    for perm in perms:
        np.testing.assert_array_equal(np.sort(perm), np.arange(512))
    assert len({tuple(p) for p in perms}) == 3


def test_all_six_orders_of_three_are_equally_likely():
    perms = jax.jit(jax.vmap(lambda k: minibatch_permutation(k, 3)))(
        jax.random.split(jax.random.PRNGKey(0), 60_000))
    counts = np.unique(np.asarray(perms) @ np.array([9, 3, 1]), return_counts=True)[1]
    assert len(counts) == 6
    assert stats.chisquare(counts).pvalue > 1e-6, counts


@pytest.mark.parametrize("n", [512, 1000, 2048])
def test_each_position_is_uniform_and_pairs_are_unordered(n):
    perms = np.asarray(jax.jit(jax.vmap(lambda k: minibatch_permutation(k, n)))(
        jax.random.split(jax.random.PRNGKey(1), 20_000)))
    # where the first, a middle and the last index land, in 16 bins of positions
    for index in (0, n // 2, n - 1):
        where = np.argmax(perms == index, axis=1)
        counts = np.bincount(where * 16 // n, minlength=16)
        assert stats.chisquare(counts).pvalue > 1e-6, (index, counts)
    # neighbours in the batch (e.g. consecutive time steps) keep no order
    before = np.mean(np.argmax(perms == 0, 1) < np.argmax(perms == 1, 1))
    assert abs(before - 0.5) < 0.02, before


def test_above_the_packed_limit_it_is_jax_random_permutation(monkeypatch):
    calls = []
    monkeypatch.setattr(update.jax.random, "permutation",
                        lambda key, n: calls.append(n) or np.arange(n))
    minibatch_permutation(jax.random.PRNGKey(0), update.PACKED_SHUFFLE_MAX)
    assert calls == []
    minibatch_permutation(jax.random.PRNGKey(0), update.PACKED_SHUFFLE_MAX + 1)
    assert calls == [update.PACKED_SHUFFLE_MAX + 1]


def test_shuffled_minibatches_cover_the_batch_once():
    batch = {"x": np.arange(512, dtype=np.float32), "y": np.arange(1024).reshape(512, 2)}
    mb = shuffled_minibatches(jax.random.PRNGKey(3), batch, 4)
    assert mb["x"].shape == (4, 128) and mb["y"].shape == (4, 128, 2)
    np.testing.assert_array_equal(np.sort(np.asarray(mb["x"]).ravel()), np.arange(512))
    np.testing.assert_array_equal(np.asarray(mb["y"])[..., 0], 2 * np.asarray(mb["x"]))
    assert not np.array_equal(np.asarray(mb["x"]).ravel(), np.arange(512))  # shuffled
