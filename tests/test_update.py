"""The shared update loop's minibatch shuffle (``purejaxpo.update.shuffled_minibatches``)."""

import jax
import numpy as np

from purejaxpo import backends
from purejaxpo.update import shuffled_minibatches


def test_shuffled_minibatches_cover_the_batch_once():
    batch = {"x": np.arange(512, dtype=np.float32), "y": np.arange(1024).reshape(512, 2)}
    mb = shuffled_minibatches(jax.random.PRNGKey(3), batch, 4)
    assert mb["x"].shape == (4, 128) and mb["y"].shape == (4, 128, 2)
    np.testing.assert_array_equal(np.sort(np.asarray(mb["x"]).ravel()), np.arange(512))
    np.testing.assert_array_equal(np.asarray(mb["y"])[..., 0], 2 * np.asarray(mb["x"]))
    assert not np.array_equal(np.asarray(mb["x"]).ravel(), np.arange(512))  # shuffled


def test_the_plain_shuffle_is_jax_random_permutation():
    batch = {"x": np.arange(64, dtype=np.float32)}
    with backends.use(backends.DEFAULT):
        mb = shuffled_minibatches(jax.random.PRNGKey(5), batch, 2)
    want = np.asarray(jax.random.permutation(jax.random.PRNGKey(5), 64))
    np.testing.assert_array_equal(np.asarray(mb["x"]).ravel(), want)
