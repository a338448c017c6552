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
    from purejaxpo import networks
    from purejaxpo.rollout import Transition

    monkeypatch.setattr(networks, "ROLLOUT_CHUNK", chunk)
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


class DenseProductTest(chex.TestCase):
    """``dense_product``: ``x @ w`` whose weight gradient multiplies a transposed copy of
    ``x``; its value, gradients, forward-mode and second derivatives (TRPO's ``jvp`` of a
    ``grad``) against float64 NumPy, with and without ``jit``, and under ``vmap``."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(((128, 64), 2), ((3, 5, 4), 64), ((7,), 1))
    def test_derivatives_match_float64(self, x_shape, n):
        from purejaxpo.networks import dense_product

        x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
        w = jax.random.normal(jax.random.PRNGKey(1), (x_shape[-1], n)) * 0.3
        dx = jax.random.normal(jax.random.PRNGKey(2), x_shape)
        dw = jax.random.normal(jax.random.PRNGKey(3), w.shape)
        loss = lambda a, b: jnp.sum(jnp.tanh(dense_product(a, b)) ** 2)  # noqa: E731
        value = self.variant(dense_product)(x, w)
        grads = self.variant(jax.grad(loss, (0, 1)))(x, w)
        _, tangent = self.variant(lambda a, b: jax.jvp(dense_product, (a, b), (dx, dw)))(x, w)
        _, hvp = self.variant(lambda a, b: jax.jvp(jax.grad(loss, 1), (a, b), (dx, dw)))(x, w)

        x64, w64, dx64, dw64 = (np.asarray(v, np.float64) for v in (x, w, dx, dw))
        xr, dxr = x64.reshape(-1, x64.shape[-1]), dx64.reshape(-1, x64.shape[-1])

        def ref_grads(xr, w64):  # d/dy sum(tanh(y)^2) = 2 tanh(y) (1 - tanh(y)^2)
            t = np.tanh(xr @ w64)
            g = 2 * t * (1 - t ** 2)
            return g @ w64.T, xr.T @ g

        gx, gw = ref_grads(xr, w64)
        eps = 1e-6  # the second derivative by central differences of the float64 gradient
        hw = (ref_grads(xr + eps * dxr, w64 + eps * dw64)[1]
              - ref_grads(xr - eps * dxr, w64 - eps * dw64)[1]) / (2 * eps)
        tol = dict(rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(value, (xr @ w64).reshape(value.shape), **tol)
        np.testing.assert_allclose(grads[0], gx.reshape(x_shape), **tol)
        np.testing.assert_allclose(grads[1], gw, **tol)
        np.testing.assert_allclose(tangent, (dxr @ w64 + xr @ dw64).reshape(value.shape), **tol)
        np.testing.assert_allclose(hvp, hw, rtol=1e-4, atol=1e-4)

    def test_vmapped_gradient_and_the_transposed_product(self):
        from purejaxpo.networks import dense_product

        x = jax.random.normal(jax.random.PRNGKey(0), (3, 128, 64))
        w = jax.random.normal(jax.random.PRNGKey(1), (3, 64, 2))
        grad = jax.vmap(jax.grad(lambda a, b: jnp.sum(dense_product(a, b) ** 2), 1))(x, w)
        want = [2 * np.asarray(x[i], np.float64).T @ (np.asarray(x[i], np.float64)
                                                      @ np.asarray(w[i], np.float64))
                for i in range(3)]
        np.testing.assert_allclose(grad, np.stack(want), rtol=2e-5, atol=2e-4)
        # the weight gradient is a product of the materialised transposed copy [K, M]
        hlo = jax.jit(jax.grad(lambda b: jnp.sum(dense_product(x[0], b) ** 2))).lower(
            w[0]).compile().as_text()
        assert "f32[64,128]" in hlo, hlo


@pytest.mark.parametrize("shape", [(1, 64), (4, 64), (8, 4), (2, 4, 64), (9, 64), (128, 64)])
@pytest.mark.parametrize("runs", [None, 1, 2])
def test_small_rows_dot_equals_the_product(shape, runs):
    """Dense layers multiply and sum where rows x runs per program is at most
    SMALL_PRODUCT_ROWS (loop code XLA:CPU can fuse a rollout into), a matrix product elsewhere
    and whenever the runs per program are unknown; both give the product (float64 check)."""
    from purejaxpo.networks import SMALL_PRODUCT_ROWS, runs_per_program, small_rows_dot

    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    w = jax.random.normal(jax.random.PRNGKey(1), (shape[-1], 3))
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    with runs_per_program(runs):
        out = jax.jit(lambda a, b: small_rows_dot(a, b, dims))(x, w)
        jaxpr = str(jax.make_jaxpr(lambda a, b: small_rows_dot(a, b, dims))(x, w))
    want = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    small = runs is not None and int(np.prod(shape[:-1])) * runs <= SMALL_PRODUCT_ROWS
    assert ("dot_general" in jaxpr) == (not small), jaxpr
