"""The QR-free orthogonal initialiser and the actor-critic."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from purejaxpo.envs import make, make_vec_env
from purejaxpo.networks import Policy, PolicySpec, orthogonal

SHAPES = [(4, 64), (64, 64), (64, 2), (64, 1), (3, 17), (17, 3),
          # convolution kernels [kh, kw, c_in, c_out]: fan-in kh * kw * c_in
          (3, 3, 4, 16), (2, 2, 32, 8), (1, 1, 3, 17), (5, 5, 1, 25)]


class OrthogonalTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES)
    def test_same_matrices_as_jax_initialiser(self, *shape):
        key = jax.random.PRNGKey(sum(shape))
        ours = self.variant(lambda k: orthogonal(np.sqrt(2.0))(k, shape))(key)
        ref = jax.nn.initializers.orthogonal(np.sqrt(2.0))(key, shape)
        assert ours.shape == shape
        np.testing.assert_allclose(ours, ref, atol=2e-6)

    @parameterized.parameters(*SHAPES)
    def test_orthonormal(self, *shape):
        w = np.asarray(orthogonal(0.5)(jax.random.PRNGKey(1), shape), np.float64) / 0.5
        w = w.reshape(-1, shape[-1])
        shape = w.shape
        small = w.T @ w if shape[0] >= shape[1] else w @ w.T
        np.testing.assert_allclose(small, np.eye(min(shape)), atol=1e-5)

    def test_vmapped_draws_differ_per_key(self):
        ws = jax.jit(jax.vmap(lambda k: orthogonal()(k, (8, 8))))(jax.random.split(jax.random.PRNGKey(0), 3))
        assert ws.shape == (3, 8, 8)
        assert not np.allclose(ws[0], ws[1])

    def test_rejects_vector_shape(self):
        with pytest.raises(ValueError, match="2 or more dimensions"):
            orthogonal()(jax.random.PRNGKey(0), (4,))


def _policy(name):
    env, env_params = make(name)
    return Policy.for_env(make_vec_env(env, env_params, 2), PolicySpec(hidden_sizes=(16, 16)))


def test_discrete_policy_shapes():
    policy = _policy("CartPole-v1")
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.zeros((5, 3, 4))  # [T, B, obs]
    dist = policy.distribution(params, obs)
    assert dist.sample(seed=jax.random.PRNGKey(1)).shape == (5, 3)
    assert policy.value(params, obs).shape == (5, 3)
    # The policy head starts near uniform (gain 0.01).
    np.testing.assert_allclose(dist.probs, 0.5, atol=0.05)


def test_continuous_actions_clipped_to_env_bounds():
    policy = _policy("Pendulum-v1")
    action = jnp.array([[-7.0], [0.5], [9.0]])
    np.testing.assert_allclose(policy.env_action(action), [[-2.0], [0.5], [2.0]])


@pytest.mark.parametrize("chunk", [1, 3, 8, 12, 10_000])
def test_over_time_chunks_equal_one_pass(monkeypatch, chunk):
    # A rollout larger than ROLLOUT_CHUNK samples goes through the critic in chunks of whole
    # time steps (a CNN on 1024 MinAtar envs needed 5.8 GiB in one pass): same values, for
    # chunks of one step, several steps, a remainder (T = 7 is no multiple), and no chunking.
    from purejaxpo.networks import policy as policy_module
    from purejaxpo.rollout import Transition

    monkeypatch.setattr(policy_module, "ROLLOUT_CHUNK", chunk)
    env, env_params = make("Breakout-MinAtar")
    policy = Policy.for_env(make_vec_env(env, env_params, 3),
                            PolicySpec(torso="cnn", conv_channels=(4,), conv_kernels=(2,),
                                       conv_strides=(1,), hidden_sizes=(8,)))
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.uniform(jax.random.PRNGKey(1), (7, 3, *policy.obs_shape))
    final_obs = jax.random.uniform(jax.random.PRNGKey(2), obs.shape)
    traj = Transition(*[None] * len(Transition._fields))._replace(obs=obs, final_obs=final_obs)
    values, next_values = jax.jit(policy.rollout_values)(params, traj)
    assert values.shape == next_values.shape == (7, 3)
    np.testing.assert_allclose(values, policy.value(params, obs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(next_values, policy.value(params, final_obs), rtol=1e-5, atol=1e-6)
