"""Variants of one PPO update, timed side by side in one process, and its kernels by time.

A record of what was tried to make the CartPole preset's update faster on a CPU, kept so the
figures in the docs can be rerun. The process runs with the CPU backend on, as ``purejaxpo
train`` (:func:`purejaxpo.backends.cpu.enable`); each variant swaps one piece of the update in
this process only, most of them one hook of the backend (the library is unchanged):

* ``base``: the library with the CPU backend, as the command line runs it;
* ``flat``: the optimiser on one flat vector of all parameters (``optax.flatten``): one Adam
  and one global-norm kernel instead of one per parameter leaf;
* ``blockdiag``: actor and critic evaluated as one network twice as wide (first layers
  concatenated, later layers block-diagonal): half the matrix products, twice their flops;
* ``batched``: the same with the hidden layers as one batched product over [actor, critic];
* ``narrow[-S[-R]]``: products with a side of at most S (default 4; the input layer, the
  heads) or at most R rows (the rollout's) as a broadcast multiply and a sum instead;
* ``keysort``: the minibatch shuffles by ``jax.random.permutation`` (a sort of random keys
  with the indices as a second operand), the plain backend's, instead of the CPU backend's
  :func:`purejaxpo.backends.cpu.packed_permutation` (a sort of single uint32 words);
* ``slowkeys``: the rollout's keys without the fused Threefry hash;
* ``products``: every dense layer a matrix product, also over a rollout step's few rows
  (``cpu.SMALL_PRODUCT_ROWS = 0``), so no rollout compiles to one kernel;
* ``nolearn``: no learning epochs (the rollout, values and advantages alone);
* ``plaingrad``: weight gradients as autodiff gives them (a ``dot_general`` over the minibatch
  rows, which XLA:CPU runs in its own loops) instead of :func:`purejaxpo.backends.cpu.dense_product`'s
  products of a transposed copy (the library's since 2026-12-02; ``tgrad`` before, as a
  custom VJP).

Every variant is compiled as a scan of ``--updates`` updates from the same state; the programs
are then called in turn ``--repeats`` times (interleaved, so a slow spell of the machine hits
all of them) and the medians reported. ``--trace`` also runs each program under
``jax.profiler`` and lists its kernels by total time (``--top`` of them). Usage::

    .venv/bin/python benchmarks/ppo_update_ab.py
    .venv/bin/python benchmarks/ppo_update_ab.py --variants base,flat --repeats 25 --trace
    .venv/bin/python benchmarks/ppo_update_ab.py --variants base,keysort --seeds 16
"""

from __future__ import annotations

import argparse
import collections
import re
import glob
import math
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from purejaxpo.backends import cpu  # noqa: E402

cpu.enable(quiet=True)  # as `purejaxpo train`, before JAX starts

import dataclasses  # noqa: E402

import distrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax.scipy.linalg import block_diag  # noqa: E402
from profile_steps import executed_kernels  # noqa: E402

import purejaxpo.algos.ppo as ppo_module  # noqa: E402
from purejaxpo import backends  # noqa: E402
from purejaxpo.networks import ACTIVATIONS, Policy  # noqa: E402
from purejaxpo.presets import preset  # noqa: E402
from purejaxpo.update import make_optimizer  # noqa: E402


def fused_forward(policy: Policy, params, x, batched: bool):
    """Logits ``[N, A]`` and values ``[N]`` of separate MLP actor and critic, as one network."""
    act = ACTIVATIONS[policy.spec.activation]
    actor, critic = params["actor"]["params"], params["critic"]["params"]
    depth = len(policy.spec.hidden_sizes)
    h = x
    for i in range(depth):
        a, c = actor[f"Dense_{i}"], critic[f"Dense_{i}"]
        bias = jnp.concatenate([a["bias"], c["bias"]])
        if i == 0:
            h = h @ jnp.concatenate([a["kernel"], c["kernel"]], 1) + bias
        elif batched:
            pair = h.reshape(*h.shape[:-1], 2, a["kernel"].shape[0])
            w = jnp.stack([a["kernel"], c["kernel"]])
            h = jnp.einsum("nki,kij->nkj", pair, w).reshape(*h.shape[:-1], -1) + bias
        else:
            h = h @ block_diag(a["kernel"], c["kernel"]) + bias
        h = act(h)
    a, c = actor[f"Dense_{depth}"], critic[f"Dense_{depth}"]
    out = h @ block_diag(a["kernel"], c["kernel"]) + jnp.concatenate([a["bias"], c["bias"]])
    n = a["kernel"].shape[1]
    return out[..., :n], out[..., n]


def small_dot(max_side: int, max_rows: int):
    """A ``dot_general`` for ``nn.Dense`` that writes products with a side of at most
    ``max_side`` (or at most ``max_rows`` rows) as a broadcast multiply and a sum, which XLA
    fuses into one loop, instead of a matrix-product call."""

    def dot(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
        k, n = rhs.shape
        rows = math.prod(lhs.shape[:-1])
        if min(k, n) <= max_side or rows <= max_rows:
            if k <= n:
                return sum(lhs[..., i, None] * rhs[i] for i in range(k)) if k <= max_side \
                    else jnp.sum(lhs[..., :, None] * rhs, axis=-2)
            return jnp.sum(lhs[..., :, None] * rhs, axis=-2)
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type)

    return dot


ORIGINAL_EVALUATE = Policy.evaluate  # taken once, before any variant replaces it
ORIGINAL_RUN_EPOCHS = ppo_module.run_epochs
ORIGINAL_SMALL_ROWS = cpu.SMALL_PRODUCT_ROWS


def no_epochs(key, state, batch, step_fn, *, num_epochs, num_minibatches):
    """``run_epochs`` without the epochs: zero metrics, the state unchanged (but made to
    depend on the batch, so that the rollout, values and advantages are still computed)."""
    del key
    minibatch = jax.tree_util.tree_map(lambda x: x[: x.shape[0] // num_minibatches], batch)
    _, metrics = jax.eval_shape(step_fn, state, minibatch)
    zeros = jax.tree_util.tree_map(
        lambda m: jnp.zeros((num_epochs, num_minibatches), m.dtype), metrics)
    tie = sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree_util.tree_leaves(batch)) * 0.0
    state = jax.tree_util.tree_map(
        lambda x: x + tie.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    return state, zeros


def variant(name: str) -> None:
    """Installs variant ``name`` in this process (for the next ``make_train``); ``base`` puts
    the library's own pieces back, whatever was installed before; ``a+b``: both."""
    ppo_module.make_optimizer = make_optimizer
    Policy.evaluate = ORIGINAL_EVALUATE
    backends.activate(cpu.BACKEND)
    ppo_module.run_epochs = ORIGINAL_RUN_EPOCHS
    cpu.SMALL_PRODUCT_ROWS = ORIGINAL_SMALL_ROWS
    cpu.TRANSPOSED_WEIGHT_GRADIENTS = True
    for part in name.split("+"):
        _install(part)


def _hook(**hooks) -> None:
    """The active backend with ``hooks`` replaced."""
    backends.activate(dataclasses.replace(backends.active(), **hooks))


def _install(name: str) -> None:
    if name == "products":
        cpu.SMALL_PRODUCT_ROWS = 0
    elif name == "nolearn":
        ppo_module.run_epochs = no_epochs
    elif name.startswith("narrow"):  # narrow[-S[-R]]: sides <= S (default 4), rows <= R (0)
        parts = [int(v) for v in name.split("-")[1:]]
        side, rows = (parts + [4, 0][len(parts):])[:2]
        _hook(dense_dot_general=small_dot(side, rows))
    elif name == "slowkeys":
        _hook(loop_key=lambda key: key)
    elif name == "keysort":
        _hook(permutation=jax.random.permutation)
    elif name == "plaingrad":
        cpu.TRANSPOSED_WEIGHT_GRADIENTS = False
    elif name == "flat":
        ppo_module.make_optimizer = lambda *a, **k: optax.flatten(make_optimizer(*a, **k))
    elif name in ("blockdiag", "batched"):
        def fused(self, params, minibatch):
            logits, value = fused_forward(self, params, self._prepare(minibatch["obs"]),
                                          batched=name == "batched")
            return distrax.Categorical(logits=logits), value
        Policy.evaluate = fused
    elif name != "base":
        raise ValueError(f"unknown variant {name!r}")


def describe(hlo: str, kernel: str) -> str:
    """``kernel``'s result shape, opcode and the JAX operation it came from, from the HLO."""
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT\s+)?%?" + re.escape(kernel) + r"\s*=\s*(\S+)\s+([\w\-]+)\(", line)
        if m:
            op = re.search(r'op_name="([^"]*)"', line)
            source = op.group(1).split("/")[-2:] if op else []
            return f"{m.group(1)} {m.group(2)} {'/'.join(source)}"
    return ""


def trace_kernels(program, state, top: int) -> list[tuple[str, int, float]]:
    """``(kernel, calls, total ms)`` of one call of ``program`` under ``jax.profiler``."""
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        jax.block_until_ready(program(state))
        jax.profiler.stop_trace()
        path = sorted(glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True))[-1]
        events = json.load(gzip.open(path))["traceEvents"]
    calls, total = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name.startswith(("ThunkExecutor", "$", "while")):
            continue
        calls[name] += 1
        total[name] += e.get("dur", 0) / 1000
    return [(k, calls[k], ms) for k, ms in total.most_common(top)]


def build(train, args):
    """``(program of --updates updates, its state, kernels run per update)`` of ``train``."""
    if args.seeds == 1:
        state = jax.jit(train.init)(jax.random.PRNGKey(0))
        many = jax.jit(lambda s: train.run(s, args.updates)).lower(state).compile()
        one = jax.jit(lambda s: train.run(s, 1)).lower(state).compile()
    else:  # seeds vmapped in one program, as `purejaxpo train --seeds`
        keys = jax.random.split(jax.random.PRNGKey(0), args.seeds)
        state = jax.jit(jax.vmap(train.init))(keys)
        many = jax.jit(jax.vmap(lambda s: train.run(s, args.updates))).lower(state).compile()
        one = jax.jit(jax.vmap(lambda s: train.run(s, 1))).lower(state).compile()
    jax.block_until_ready(many(state))
    return many, state, executed_kernels(one.as_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default="base,keysort,flat,blockdiag,batched,narrow,plaingrad")
    p.add_argument("--updates", type=int, default=50)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seeds", type=int, default=1, help="seeds vmapped in each program")
    p.add_argument("--trace", action="store_true", help="list every variant's kernels by time")
    p.add_argument("--top", type=int, default=15, help="kernels listed by --trace")
    args = p.parse_args()

    config = preset("ppo", "CartPole-v1")
    programs = {}
    for name in args.variants.split(","):
        variant(name)
        train = ppo_module.make_train(config)
        # as `purejaxpo train` traces its runs (`devices.vmap_runs`)
        with cpu.runs_per_program(args.seeds if cpu.fused_loops_active() else None):
            programs[name] = build(train, args)
    variant("base")

    times = {name: [] for name in programs}
    for _ in range(args.repeats):
        for name, (many, state, _) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(many(state))
            times[name].append((time.perf_counter() - start) / args.updates * 1000)
    print(f"| variant | kernels run per update | ms per update (median of {args.repeats}) "
          "| min | max |\n|---|---:|---:|---:|---:|")
    for name, (_, _, kernels) in programs.items():
        t = times[name]
        print(f"| {name} | {kernels:,} | {statistics.median(t):.2f} | {min(t):.2f} | "
              f"{max(t):.2f} |")
    for variant_name in programs if args.trace else ():
        many, state, _ = programs[variant_name]
        print(f"\n{variant_name}: kernels by total time in one call ({args.updates} updates, "
              "traced)")
        for name, n, ms in trace_kernels(many, state, top=args.top):
            print(f"  {ms:8.1f} ms  {n:7d} calls  {1000 * ms / n:7.1f} us each  {name}  "
                  f"{describe(many.as_text(), name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
