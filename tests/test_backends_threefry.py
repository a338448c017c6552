"""``purejaxpo.backends.threefry``: Threefry-2x32 with a fused hash gives jax's numbers bit for bit."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.backends import threefry

MASK = (1 << 32) - 1


def threefry2x32_reference(k1: int, k2: int, x1: int, x2: int) -> tuple[int, int]:
    """Threefry-2x32, 20 rounds, on Python integers (Salmon et al. 2011, Random123)."""
    rotl = lambda v, d: ((v << d) | (v >> (32 - d))) & MASK  # noqa: E731
    ks = [k1, k2, k1 ^ k2 ^ 0x1BD11BDA]
    rotations = [(13, 15, 26, 6), (17, 29, 16, 24)]
    x = [(x1 + ks[0]) & MASK, (x2 + ks[1]) & MASK]
    for i in range(5):
        for r in rotations[i % 2]:
            x[0] = (x[0] + x[1]) & MASK
            x[1] = rotl(x[1], r) ^ x[0]
        x[0] = (x[0] + ks[(i + 1) % 3]) & MASK
        x[1] = (x[1] + ks[(i + 2) % 3] + i + 1) & MASK
    return x[0], x[1]


# Random123's known-answer vectors for threefry2x32_20: (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


class HashTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_known_answers(self):
        fn = self.variant(threefry.threefry2x32)
        for (k1, k2), (x1, x2), expected in KNOWN_ANSWERS:
            assert threefry2x32_reference(k1, k2, x1, x2) == expected
            out = fn(*(jnp.uint32(v) for v in (k1, k2, x1, x2)))
            assert tuple(int(v) for v in out) == expected

    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_the_reference_on_random_words(self):
        rng = np.random.default_rng(0)
        k1, k2 = (int(v) for v in rng.integers(0, 1 << 32, 2))
        x1, x2 = rng.integers(0, 1 << 32, (2, 64), dtype=np.uint64).astype(np.uint32)
        y1, y2 = self.variant(threefry.threefry2x32)(jnp.uint32(k1), jnp.uint32(k2), x1, x2)
        for i in range(64):
            assert (int(y1[i]), int(y2[i])) == threefry2x32_reference(k1, k2, int(x1[i]),
                                                                      int(x2[i]))


DRAWS = {
    "split": lambda k: jax.random.split(k, 5),
    "split_2d": lambda k: jax.random.split(k, (3, 4)),
    "fold_in": lambda k: jax.random.fold_in(k, 17),
    "uniform": lambda k: jax.random.uniform(k, (7,)),
    "normal": lambda k: jax.random.normal(k, (3, 5)),
    "categorical": lambda k: jax.random.categorical(k, jnp.log(jnp.arange(1.0, 13.0)).reshape(4, 3)),
    "randint": lambda k: jax.random.randint(k, (9,), 0, 100),
    "bits8": lambda k: jax.random.bits(k, (5,), jnp.uint8),
    "bits16": lambda k: jax.random.bits(k, (5,), jnp.uint16),
    "bits32_odd": lambda k: jax.random.bits(k, (3, 3)),
    "permutation": lambda k: jax.random.permutation(k, 33),
    "bernoulli": lambda k: jax.random.bernoulli(k, 0.3, (11,)),
}


class SameNumbersTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.timeout(300)
    def test_every_draw_equals_jax_default_threefry(self):
        fns = {name: self.variant(lambda k, d=draw: threefry.raw_key(d(threefry.fast_key(k))))
               for name, draw in DRAWS.items()}
        for seed in (0, 1, 12345, 2 ** 31 + 7, -5):
            for name, draw in DRAWS.items():
                key = jax.random.PRNGKey(seed)
                expected = threefry.raw_key(draw(key))
                got = fns[name](key)
                np.testing.assert_array_equal(np.asarray(got), np.asarray(expected),
                                              err_msg=f"{name}, seed {seed}")


def test_vmapped_keys_and_typed_threefry_keys():
    keys = jax.random.split(jax.random.PRNGKey(3), 6)
    expected = jax.vmap(lambda k: jax.random.uniform(k, (4,)))(keys)
    got = jax.jit(jax.vmap(lambda k: jax.random.uniform(threefry.fast_key(k), (4,))))(keys)
    np.testing.assert_array_equal(got, expected)
    typed = jax.random.key(9)
    np.testing.assert_array_equal(jax.random.normal(threefry.fast_key(typed), (3,)),
                                  jax.random.normal(typed, (3,)))


def test_fast_raw_and_like_round_trip():
    raw = jax.random.PRNGKey(4)
    fast = threefry.fast_key(raw)
    assert jax.random.key_impl(fast) == threefry.FAST_THREEFRY
    assert threefry.fast_key(fast) is fast
    np.testing.assert_array_equal(threefry.raw_key(fast), raw)
    np.testing.assert_array_equal(threefry.raw_key(raw), raw)
    back = threefry.like(fast, raw)
    assert back.dtype == jnp.uint32
    np.testing.assert_array_equal(back, raw)
    typed = jax.random.key(4)
    again = threefry.like(fast, typed)
    assert jax.random.key_impl(again) == jax.random.key_impl(typed)
    np.testing.assert_array_equal(jax.random.key_data(again), raw)


def test_fast_key_rejects_keys_that_are_not_threefry():
    with pytest.raises(ValueError, match="threefry key"):
        threefry.fast_key(jnp.zeros((4,), jnp.uint32))
    with pytest.raises(ValueError, match="threefry key"):
        threefry.fast_key(jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="threefry key"):
        threefry.fast_key(jax.random.key(0, impl="rbg"))


def test_the_hash_compiles_without_a_loop_on_cpu():
    """The point of the module: jax's CPU lowering of its hash is a ``while`` loop; ours is
    straight-line code that XLA fuses."""
    def draw(make):
        return jax.jit(lambda k: jax.random.uniform(make(k), (4,))).lower(
            jax.random.PRNGKey(0)).compile().as_text()

    fused = draw(threefry.fast_key)
    assert " while(" not in fused
    if jax.default_backend() == "cpu":
        assert " while(" in draw(lambda k: k)  # jax's rolled lowering, which this avoids


def test_the_older_stream_keeps_jax_keys():
    key = jax.random.PRNGKey(2)
    with jax.threefry_partitionable(False):
        assert threefry.fast_key(key) is key
        np.testing.assert_array_equal(jax.random.uniform(threefry.fast_key(key), (3,)),
                                      jax.random.uniform(key, (3,)))


def _leaves(tree):
    return [np.asarray(threefry.raw_key(x)) for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.timeout(300)
def test_ppo_updates_are_bitwise_those_of_jax_keys():
    """The rollout draws with fast keys; two PPO updates (rollout, GAE, minibatch Adam) give
    exactly the state and metrics they give with jax's keys."""
    from purejaxpo import backends
    from purejaxpo.algos.ppo import make_train
    from purejaxpo.backends import cpu
    from purejaxpo.presets import preset

    config = preset("ppo", "CartPole-v1")

    def two_updates():
        train = make_train(config)
        return jax.jit(lambda k: train.run(train.init(k), 2))(jax.random.PRNGKey(7))

    with backends.use(cpu.BACKEND):
        fast = two_updates()
    with backends.use(dataclasses.replace(cpu.BACKEND, loop_key=lambda key: key)):
        slow = two_updates()
    for a, b in zip(_leaves(fast), _leaves(slow), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sampled_tokens_are_those_of_jax_keys():
    """The CPU backend's keys and Gumbel noise drawn ahead give the plain decoder's tokens."""
    from purejaxpo import backends
    from purejaxpo.backends import cpu
    from purejaxpo.lm import sampling
    from purejaxpo.lm.model import TransformerConfig, init_params

    cfg = TransformerConfig(vocab_size=11, num_layers=1, width=16, num_heads=2, max_len=16)
    params = init_params(jax.random.PRNGKey(0), cfg)
    prompts = jnp.array([[3, 4, 5], [0, 8, 9]], jnp.int32)
    valid = prompts > 0

    def sample():
        return jax.jit(lambda key: sampling.generate(
            key, params, cfg, prompts, valid, max_new_tokens=8, eos_id=2, pad_id=0,
            temperature=1.5))(jax.random.PRNGKey(2))

    with backends.use(cpu.BACKEND):
        fast = sample()
    with backends.use(backends.DEFAULT):
        slow = sample()
    for a, b in zip(_leaves(fast), _leaves(slow), strict=True):
        np.testing.assert_array_equal(a, b)
