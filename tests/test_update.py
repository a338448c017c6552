"""The shared update loop's minibatch shuffle."""

import jax
import numpy as np

from purejaxpo.update import shuffled_minibatches


def test_shuffled_minibatches_cover_the_batch_once():
    batch = {"x": np.arange(512, dtype=np.float32), "y": np.arange(1024).reshape(512, 2)}
    mb = shuffled_minibatches(jax.random.PRNGKey(3), batch, 4)
    assert mb["x"].shape == (4, 128) and mb["y"].shape == (4, 128, 2)
    np.testing.assert_array_equal(np.sort(np.asarray(mb["x"]).ravel()), np.arange(512))
    np.testing.assert_array_equal(np.asarray(mb["y"])[..., 0], 2 * np.asarray(mb["x"]))
    assert not np.array_equal(np.asarray(mb["x"]).ravel(), np.arange(512))  # shuffled
