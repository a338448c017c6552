"""The shared update loop's minibatch shuffle."""

import itertools

import jax
import numpy as np
import pytest
from scipy import stats

from purejaxpo.update import minibatch_permutation, shuffled_minibatches


def test_shuffled_minibatches_cover_the_batch_once():
    batch = {"x": np.arange(512, dtype=np.float32), "y": np.arange(1024).reshape(512, 2)}
    mb = shuffled_minibatches(jax.random.PRNGKey(3), batch, 4)
    assert mb["x"].shape == (4, 128) and mb["y"].shape == (4, 128, 2)
    np.testing.assert_array_equal(np.sort(np.asarray(mb["x"]).ravel()), np.arange(512))
    np.testing.assert_array_equal(np.asarray(mb["y"])[..., 0], 2 * np.asarray(mb["x"]))
    assert not np.array_equal(np.asarray(mb["x"]).ravel(), np.arange(512))  # shuffled


@pytest.mark.parametrize("n", [1, 2, 3, 7, 512, 1000, 2048, 5000, (1 << 16) + 3])
def test_minibatch_permutation_is_a_permutation(n):
    for fn in (minibatch_permutation, jax.jit(minibatch_permutation, static_argnums=1)):
        perm = np.asarray(fn(jax.random.PRNGKey(n), n))
        assert perm.dtype == np.int32 and perm.shape == (n,)
        np.testing.assert_array_equal(np.sort(perm), np.arange(n))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    perms = np.asarray(jax.vmap(minibatch_permutation, in_axes=(0, None))(keys, n))
    for perm in perms:
        np.testing.assert_array_equal(np.sort(perm), np.arange(n))
    if n >= 7:
        assert len({tuple(p) for p in perms}) == 3  # different keys, different orders


def _chi_square_p(counts, expected):
    chi2 = ((counts - expected) ** 2 / expected).sum()
    return stats.chi2.sf(chi2, len(counts) - 1)


def test_minibatch_permutation_orders_three_items_uniformly():
    keys = jax.random.split(jax.random.PRNGKey(0), 12_000)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: minibatch_permutation(k, 3)))(keys))
    orders = {o: i for i, o in enumerate(itertools.permutations(range(3)))}
    counts = np.bincount([orders[tuple(p)] for p in perms], minlength=6)
    assert _chi_square_p(counts, len(keys) / 6) > 1e-3, counts


@pytest.mark.parametrize("n", [512, 1000, 2048])
def test_minibatch_permutation_places_items_uniformly(n):
    """First, last and a middle item land in each of 16 position bins equally often, and
    neighbouring items keep their index order half of the time (ties would keep it)."""
    keys = jax.random.split(jax.random.PRNGKey(n), 4096)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: minibatch_permutation(k, n)))(keys))
    where = np.argsort(perms, axis=1)  # where[r, i]: the position item i landed at
    bins = 16 * np.arange(n) // n  # n need not divide by 16: bins differ by one position
    for item in (0, n // 2, n - 1):
        counts = np.bincount(bins[where[:, item]], minlength=16)
        expected = np.bincount(bins, minlength=16) * len(keys) / n
        assert _chi_square_p(counts, expected) > 1e-3, (item, counts)
    kept = (where[:, 1:] > where[:, :-1]).mean()
    assert abs(kept - 0.5) < 4 * 0.5 / np.sqrt(where[:, 1:].size), kept
