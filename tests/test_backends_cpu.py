"""The CPU backend (``purejaxpo.backends.cpu``) and the seam it enters through: each hook
against the plain operation or a float64 reference, the flags, and that nothing of it is in
the plain code."""

import itertools
import os
import pathlib
import subprocess
import sys
import textwrap

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest
from absl.testing import parameterized
from scipy import stats

from purejaxpo import backends
from purejaxpo.backends import cpu
from purejaxpo.backends.cpu import (SMALL_PRODUCT_ROWS, dense_product, packed_permutation,
                                    runs_per_program, small_rows_dot)
from purejaxpo.networks import conv_layer

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Probe(nn.Module):
    """One :func:`conv_layer` inside a compact module, as the CNN torso makes it."""

    features: int
    kernel: int
    stride: int
    padding: str

    @nn.compact
    def __call__(self, x):
        return conv_layer(self.features, self.kernel, self.stride, self.padding, name="Conv_0")(x)


class DenseProductTest(chex.TestCase):
    """``dense_product``: ``x @ w`` whose weight gradient multiplies a transposed copy of
    ``x``; its value, gradients, forward-mode and second derivatives (TRPO's ``jvp`` of a
    ``grad``) against float64 NumPy, with and without ``jit``, and under ``vmap``."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(((128, 64), 2), ((3, 5, 4), 64), ((7,), 1))
    def test_derivatives_match_float64(self, x_shape, n):
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


class PermutationTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_every_index_exactly_once(self):
        for n in (1, 2, 3, 7, 128, 512, 1000, 4096, 1 << 16, (1 << 16) + 1):
            fn = self.variant(lambda key, n=n: packed_permutation(key, n))
            perm = np.asarray(fn(jax.random.PRNGKey(n)))
            assert perm.dtype == np.int32
            np.testing.assert_array_equal(np.sort(perm), np.arange(n))


def test_vmapped_keys_give_different_permutations():
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    perms = np.asarray(jax.vmap(packed_permutation, in_axes=(0, None))(keys, 512))
    for perm in perms:
        np.testing.assert_array_equal(np.sort(perm), np.arange(512))
    assert len({tuple(p) for p in perms}) == 3


def test_all_six_orders_of_three_are_equally_likely():
    perms = jax.jit(jax.vmap(lambda k: packed_permutation(k, 3)))(
        jax.random.split(jax.random.PRNGKey(0), 60_000))
    counts = np.unique(np.asarray(perms) @ np.array([9, 3, 1]), return_counts=True)[1]
    assert len(counts) == 6
    assert stats.chisquare(counts).pvalue > 1e-6, counts


@pytest.mark.parametrize("n", [512, 1000, 2048])
def test_each_position_is_uniform_and_pairs_are_unordered(n):
    perms = np.asarray(jax.jit(jax.vmap(lambda k: packed_permutation(k, n)))(
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
    monkeypatch.setattr(cpu.jax.random, "permutation",
                        lambda key, n: calls.append(n) or np.arange(n))
    packed_permutation(jax.random.PRNGKey(0), cpu.PACKED_SHUFFLE_MAX)
    assert calls == []
    packed_permutation(jax.random.PRNGKey(0), cpu.PACKED_SHUFFLE_MAX + 1)
    assert calls == [cpu.PACKED_SHUFFLE_MAX + 1]


@pytest.mark.parametrize("backend", [backends.DEFAULT, cpu.BACKEND], ids=["plain", "cpu"])
def test_convolution_layer_matches_numpy(backend):
    """``conv_layer``: flax's ``nn.Conv`` (plain) and the CPU backend's ``PatchConv`` compute
    the same convolution, with the same parameters, against a float64 NumPy loop and lax."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 9, 8, 5)).astype(np.float32)  # two batch axes
    for (k, s), padding in itertools.product(((3, 1), (2, 2), (3, 2), (1, 1), (2, 1)),
                                             ("valid", "same")):
        conv = Probe(6, k, s, padding)
        with backends.use(backend):  # the layer is chosen when the module is traced
            params = conv.init(jax.random.PRNGKey(k + s), x)
            params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # a non-zero bias too
            got = np.asarray(jax.jit(conv.apply)(params, x))
            jaxpr = str(jax.make_jaxpr(conv.apply)(params, x))
        assert ("conv_general_dilated" in jaxpr) == (backend is backends.DEFAULT)
        assert list(params["params"]) == ["Conv_0"]
        w = np.asarray(params["params"]["Conv_0"]["kernel"], np.float64)
        b = np.asarray(params["params"]["Conv_0"]["bias"], np.float64)
        if padding == "valid":
            h_out, w_out, top, left = (9 - k) // s + 1, (8 - k) // s + 1, 0, 0
        else:  # SAME: ceil(n / s) out; (n_out - 1) * s + k - n zeros, the extra one after
            h_out, w_out = -(-9 // s), -(-8 // s)
            top = max((h_out - 1) * s + k - 9, 0) // 2
            left = max((w_out - 1) * s + k - 8, 0) // 2
        xp = np.zeros((2, 3, 9 + 2 * k, 8 + 2 * k, 5))  # room for the zeros on either side
        xp[..., k:k + 9, k:k + 8, :] = x
        want = np.zeros((2, 3, h_out, w_out, 6))
        for i in range(h_out):
            for j in range(w_out):
                r, c = k - top + i * s, k - left + j * s
                patch = xp[..., r:r + k, c:c + k, :]
                want[..., i, j, :] = np.einsum("...hwc,hwco->...o", patch, w) + b
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        # and as lax's convolution computes it
        ref = jax.lax.conv_general_dilated(x.reshape(6, 9, 8, 5), params["params"]["Conv_0"]["kernel"],
                                           (s, s), padding.upper(),
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        np.testing.assert_allclose(got.reshape(ref.shape), ref + b, rtol=1e-5, atol=1e-5)




# --- The seam: nothing of the CPU backend is in the plain code, or in the process by import.

PLAIN_MODULES = ["purejaxpo/networks", "purejaxpo/rollout.py", "purejaxpo/update.py",
                 "purejaxpo/lm/sampling.py"]
CPU_ONLY = ["xla_", "XLA_FLAGS", "small_rows", "dense_product", "PatchConv", "runs_per_program",
            "Tail", "live_tail", "fast_key", "threefry", "packed_permutation", "step_noise",
            "backends.cpu"]


def test_the_plain_modules_hold_no_cpu_only_code():
    for place in PLAIN_MODULES:
        path = ROOT / place
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            text = file.read_text()
            found = [word for word in CPU_ONLY if word in text]
            assert not found, f"{file.relative_to(ROOT)} names {found}"


def _python(code, env=None, timeout=240):
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env={**base, **(env or {})}, cwd=ROOT)


def test_importing_purejaxpo_changes_no_environment_variable():
    """``import purejaxpo`` leaves ``os.environ`` as it was; so does every purejaxpo module
    beyond what its third-party dependencies set when they are imported (distrax's TensorFlow
    Probability sets ``TF_CPP_MIN_LOG_LEVEL``, gymnax's pygame ``PYGAME_HIDE_SUPPORT_PROMPT``:
    imported first, so that the comparison sees purejaxpo's own changes only)."""
    code = """
        import os
        before = dict(os.environ)
        import purejaxpo
        assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
        import distrax, gymnax, flax, optax, orbax.checkpoint, flashbax, tqdm, matplotlib
        before = dict(os.environ)
        import purejaxpo.algos, purejaxpo.sweep, purejaxpo.lm.grpo, purejaxpo.cli
        import purejaxpo.backends.cpu, purejaxpo.devices, purejaxpo.checkpoint
        from purejaxpo import backends
        assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
        assert backends.active() is backends.DEFAULT
        print("unchanged")
    """
    out = _python(code)
    assert out.stdout.strip() == "unchanged", out.stderr


def test_enable_sets_the_flags_the_devices_and_the_hooks():
    code = """
        import os
        from purejaxpo.backends import cpu
        from purejaxpo import backends
        assert cpu.enable(quiet=True)
        import jax
        print(os.environ.get("XLA_FLAGS", ""))
        print(len(jax.devices()), cpu.cpu_cores(), backends.active().name)
        cpu.disable()
        print(backends.active().name)
    """
    out = _python(code)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3, out.stderr
    if tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) in cpu._FUSED_LOOP_JAXLIBS:
        assert "xla_cpu_small_while_loop_byte_threshold" in lines[0]
    devices, cores, name = lines[1].split()
    assert devices == cores and name == "cpu"
    assert lines[2] == "default"


def test_use_selects_a_backend_for_a_block_only():
    assert backends.active() is backends.DEFAULT
    with backends.use(cpu.BACKEND):
        assert backends.active() is cpu.BACKEND
        with backends.use(backends.DEFAULT):
            assert backends.active() is backends.DEFAULT
        assert backends.active() is cpu.BACKEND
    assert backends.active() is backends.DEFAULT
    with pytest.raises(TypeError, match="Backend"):
        backends.activate("cpu")


@pytest.mark.parametrize("torso", ["mlp", "cnn"])
def test_a_policy_has_the_same_parameters_under_either_backend(torso):
    """The hooks change how a layer computes, never its parameters: a policy initialised with
    the CPU backend equals the plain one leaf for leaf (a checkpoint moves between machines),
    and its outputs agree to float rounding."""
    from purejaxpo.networks import Policy, PolicySpec

    spec = (PolicySpec(torso="cnn", conv_channels=(8,), conv_kernels=(3,), conv_strides=(1,),
                       hidden_sizes=(16,)) if torso == "cnn" else PolicySpec())
    shape = (6, 6, 2) if torso == "cnn" else (4,)
    policy = Policy(shape, num_actions=3, spec=spec)
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, *shape))
    out = {}
    for backend in (backends.DEFAULT, cpu.BACKEND):
        with backends.use(backend):
            params = policy.init(jax.random.PRNGKey(0))
            out[backend.name] = params, jax.jit(policy.value)(params, obs)
    chex.assert_trees_all_equal(out["default"][0], out["cpu"][0])
    np.testing.assert_allclose(out["default"][1], out["cpu"][1], rtol=1e-5, atol=1e-5)


def test_the_cpu_hooks_draw_the_plain_code_s_numbers():
    """Keys of the fused hash and the Gumbel noise drawn ahead give the numbers the plain code
    draws: the same actions in a rollout, the same tokens in decoding."""
    key = jax.random.PRNGKey(3)
    keys = jax.random.split(key, 4)
    fast = jax.random.split(cpu.BACKEND.loop_key(key), 4)
    np.testing.assert_array_equal(jax.random.key_data(fast), keys)
    noise = cpu.step_noise(keys, (2, 5), jnp.float32)
    for i in range(4):
        np.testing.assert_array_equal(noise[i], jax.random.gumbel(keys[i], (2, 5)))


def test_safe_scheduler_flag_is_opt_in_and_keeps_the_users_choice():
    code = """
        import os
        from purejaxpo.backends import cpu
        print(cpu.use_safe_scheduler(), os.environ.get("XLA_FLAGS", ""))
    """
    user = "--xla_force_host_platform_device_count=2"
    out = _python(code, {"XLA_FLAGS": user}).stdout.split()
    affected = tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) in cpu._FUSED_LOOP_JAXLIBS
    assert out == (["True", user, f"{cpu.SAFE_SCHEDULER_FLAG}=false"] if affected
                   else ["False", user])
    mine = f"{cpu.SAFE_SCHEDULER_FLAG}=true"
    assert _python(code, {"XLA_FLAGS": mine}).stdout.split() == ["False", mine]
