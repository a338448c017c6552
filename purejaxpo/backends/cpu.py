"""The CPU backend: everything that exists only to make XLA:CPU fast, behind one seam.

Turn it on with one call, first thing in a script (before JAX makes an array)::

    from purejaxpo.backends import cpu
    cpu.enable()            # XLA flags, one JAX device per core, the CPU hooks below

The ``purejaxpo`` commands call it by default (``train``, ``sweep`` and ``bench`` with the
fused-loop flags, ``--no-fused-loops`` to leave them out; the ``lm`` commands with the vector
width alone). :func:`enable` sets XLA flags whatever the device (they are XLA:CPU options), but
activates the hooks only where JAX's default backend is the CPU: on a GPU or TPU none of this
runs, and the library's code is the plain one of :mod:`purejaxpo.backends`.

What it holds, and why (every figure measured on the project's 2-core AMD EPYC, jax 0.10.2; the
docs' "CPU performance" page has the rest):

* **XLA flags** (:func:`use_fused_loops`, :func:`use_wide_vectors`, :func:`use_safe_scheduler`):
  small loops (a rollout's ``scan``) compiled into one kernel, 512-bit vectors on AVX-512 CPUs,
  and the opt-in scheduler flag that avoids jaxlib 0.10's deadlock in batched QR.
* **One JAX device per core** (:func:`use_cpu_cores`): JAX makes one CPU device for the whole
  machine, and many small vmapped runs keep about one core busy;
  :func:`purejaxpo.devices.vmap_runs` splits runs over the devices this makes.
* **Dense layers** (:func:`small_rows_dot`, the ``dense_dot_general`` hook): a multiply and a
  sum for a layer over a few rows inside a fused loop, and :func:`dense_product`, whose weight
  gradient is a row-major product (a custom JVP). :func:`trace_runs` tells it how many runs a
  program holds.
* **Convolutions** (:class:`PatchConv`, the ``conv`` hook): one matmul over image patches.
* **PRNG keys** (the ``loop_key`` hook): :mod:`purejaxpo.backends.threefry`'s fused hash, the
  same numbers as jax's default keys.
* **The minibatch shuffle** (:func:`packed_permutation`, the ``permutation`` hook): a sort of
  single packed words. NOT an exactly uniform permutation: a pair of indices whose random parts
  tie in every round keeps its order (expected number of such pairs below 1/2 for any batch;
  0.016 for 512 indices). The plain backend uses ``jax.random.permutation``.
* **LM decoding** (:class:`Tail`, :func:`live_tail`, :func:`step_noise`): after the middle of
  the completions only the unfinished rows are decoded (the same tokens), and every step's
  Gumbel noise is drawn before the loop (the same numbers).

Results with the backend on can differ from the plain code's in the last bits (sums in another
order) and, for the minibatch order, as said above; with the same settings a run is bitwise
reproducible, checkpointed, chunked or resumed.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import warnings
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from purejaxpo import backends
from purejaxpo.backends import threefry

# ---------------------------------------------------------------------------------------------
# One JAX device per core.

def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _explicit_cpu_device_count() -> int | None:
    import jax

    value = jax.config.jax_num_cpu_devices
    if value is not None and value >= 0:
        return int(value)
    for flag in os.environ.get("XLA_FLAGS", "").split():
        if flag.startswith("--xla_force_host_platform_device_count="):
            try:
                return int(flag.split("=", 1)[1])
            except ValueError:
                return None
    return None


def use_cpu_cores(count: int | None = None, *, quiet: bool = False) -> int:
    """Asks JAX for ``count`` CPU devices (default: one per core, :func:`cpu_cores`).

    Call it before JAX starts its CPU backend, i.e. before any JAX array is made or function
    run (importing jax and purejaxpo is fine; importing gymnax or ``purejaxpo.algos`` is not:
    gymnax makes arrays when imported). With ``count=None`` an explicit earlier choice
    (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or the ``jax_num_cpu_devices``
    config) is kept, and a backend already started is left as it is, with a ``UserWarning``
    if it has fewer devices than cores (``quiet=True``: no warning).

    Returns:
      the number of CPU devices JAX has or will have.

    Raises:
      ValueError: ``count`` is not an integer >= 1.
      RuntimeError: an explicit ``count`` differs from the devices of a CPU backend that has
        already started.
    """
    import jax
    from jax._src import xla_bridge

    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or count < 1):
        raise ValueError(f"count={count!r} is invalid: must be an integer >= 1 (or None: one "
                         f"device per core)")
    if xla_bridge.backends_are_initialized():
        have = len(jax.devices("cpu"))
        if count is not None and count != have:
            raise RuntimeError(
                f"use_cpu_cores(count={count}): JAX's CPU backend has already started with "
                f"{have} device(s); call it before any JAX array is made or function run")
        if (count is None and not quiet and have < cpu_cores()
                and _explicit_cpu_device_count() is None):
            warnings.warn(
                f"use_cpu_cores() came after JAX's CPU backend started (something made an "
                f"array or ran a function, or gymnax was imported): keeping {have} device(s) "
                f"for {cpu_cores()} cores; call it first thing", UserWarning, stacklevel=2)
        return have
    if count is None:
        explicit = _explicit_cpu_device_count()
        if explicit is not None:
            return explicit
        count = cpu_cores()
    jax.config.update("jax_num_cpu_devices", count)
    return count


def parse_cpu_devices(text: str) -> int | None:
    """The ``--cpu-devices`` flag: ``auto`` (None: one per core) or an integer >= 1."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--cpu-devices={text!r} is invalid: must be 'auto' or an integer >= 1")
    return value


def add_cpu_args(parser) -> None:
    """Adds ``--cpu-devices`` (read with :func:`parse_cpu_devices`) and ``--no-fused-loops``
    to an ``argparse`` parser."""
    parser.add_argument(
        "--cpu-devices", default="auto", metavar="N|auto",
        help="JAX CPU devices to split the runs over (default auto: one per core, unless "
             "XLA_FLAGS sets a count); has no effect on a GPU or TPU")
    parser.add_argument(
        "--no-fused-loops", dest="fused_loops", action="store_false",
        help="keep XLA:CPU's default of one kernel per operation inside loops (default: small "
             "loops such as a rollout compile to one kernel, see purejaxpo.devices)")

# ---------------------------------------------------------------------------------------------
# XLA flags.

FUSED_LOOP_BYTES = 1 << 20
"""Loops touching fewer bytes than this are compiled into one kernel by :func:`use_fused_loops`."""

_THRESHOLD_OPTION = "xla_cpu_small_while_loop_byte_threshold"
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_VECTOR_FLAG = "--xla_cpu_prefer_vector_width"
_FUSED_LOOP_JAXLIBS = ((0, 10), (0, 11))
"""jaxlib versions (major, minor) whose XLA knows these flags (an unknown flag aborts XLA)."""


def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU has AVX-512 (``avx512f`` among the ``/proc/cpuinfo`` flags;
    False where that file does not exist, as on macOS or Windows)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and "avx512f" in line.split() for line in f)
    except OSError:
        return False


def fused_loop_flags(max_bytes: int = FUSED_LOOP_BYTES,
                     wide_vectors: bool | None = None) -> list[str]:
    """The ``XLA_FLAGS`` :func:`use_fused_loops` adds (``wide_vectors``: add the 512-bit
    vector width; None: where :func:`cpu_has_avx512`)."""
    wide = cpu_has_avx512() if wide_vectors is None else wide_vectors
    return [f"--xla_backend_extra_options={_THRESHOLD_OPTION}={max_bytes}",
            f"{_YNN_FLAG}=individual_dot"] + ([f"{_VECTOR_FLAG}=512"] if wide else [])


def use_fused_loops(max_bytes: int = FUSED_LOOP_BYTES, *, wide_vectors: bool = True,
                    quiet: bool = False) -> bool:
    """Lets XLA:CPU compile each small loop (a rollout's ``scan``) into a single kernel, and
    its own loop code use the CPU's widest vectors.

    A ``lax.scan`` on XLA:CPU normally runs as a loop of kernels dispatched one by one, and a
    CartPole rollout step is about 60 tiny kernels (0.1-1 us each, far more than the step's
    arithmetic). XLA has a pass that compiles a whole loop into one kernel instead, for loops
    touching fewer bytes than a threshold (1 kB by default) and holding no library call. This
    adds these ``XLA_FLAGS`` before JAX starts:

    * ``--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=max_bytes``;
    * ``--xla_cpu_experimental_ynn_fusion_type=individual_dot``: the YNNPACK library keeps the
      matrix products but no longer takes the reductions, which would make the rollout a loop
      with library calls (its dense layers over a few envs multiply and sum:
      :func:`small_rows_dot`);
    * ``--xla_cpu_prefer_vector_width=512`` where the CPU has AVX-512
      (:func:`cpu_has_avx512`) and ``wide_vectors``: XLA's own kernels (the fused loops, elementwise work, the
      optimiser) use 512-bit vectors instead of its default 256. One PPO CartPole update took
      1.52 ms against 1.75 (2-core AMD EPYC, ``benchmarks/ppo_update_ab.py``, three
      interleaved processes each, medians of 20 calls). A ``--xla_cpu_prefer_vector_width`` of
      your own in ``XLA_FLAGS`` is kept.

    The flags change how programs are compiled, not what they compute, except that a
    reduction compiled by XLA instead of YNNPACK, or with other vectors, may sum in another
    order (last-bit differences). Nothing is changed if ``XLA_FLAGS`` already sets either loop
    flag (your choice wins), if the installed jaxlib is not one whose XLA is known to have
    them (an unknown flag aborts XLA), or if JAX has already started its backends (XLA reads
    the flags once; a ``UserWarning`` says so unless ``quiet``). ``purejaxpo train``,
    ``sweep`` and ``bench`` call it (``--no-fused-loops`` turns it off).

    Returns:
      True if the flags were added by this call.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes={max_bytes!r} is invalid: must be an integer >= 1")
    flags = os.environ.get("XLA_FLAGS", "")
    if _THRESHOLD_OPTION in flags or _YNN_FLAG in flags:
        return False
    keep_width = _VECTOR_FLAG in flags or not wide_vectors  # the user's vector width wins
    return _add_xla_flags(lambda: fused_loop_flags(max_bytes, False if keep_width else None),
                          "use_fused_loops() came after JAX started its backends: XLA_FLAGS "
                          "are read once, so loops stay as they were; call it first thing",
                          quiet)


def _add_xla_flags(flags: Callable[[], list[str]], late: str, quiet: bool) -> bool:
    """Appends ``flags()`` to ``XLA_FLAGS`` if the installed jaxlib's XLA is known to have them
    (:data:`_FUSED_LOOP_JAXLIBS`: an unknown flag aborts XLA) and JAX's backends have not
    started (else warns ``late`` unless ``quiet``); True if added."""
    import jaxlib
    from jax._src import xla_bridge

    parts = jaxlib.__version__.split(".")
    if tuple(int(p) for p in parts[:2] if p.isdigit()) not in _FUSED_LOOP_JAXLIBS:
        return False
    if xla_bridge.backends_are_initialized():
        if not quiet:
            warnings.warn(late, UserWarning, stacklevel=3)
        return False
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags()]).strip()
    return True


def use_wide_vectors(*, quiet: bool = False) -> bool:
    """Lets XLA:CPU's own kernels use 512-bit vectors on a CPU with AVX-512, alone (without
    :func:`use_fused_loops`' loop settings, which slow a transformer's sampling: the library
    then takes no elementwise work with its products).

    Adds ``--xla_cpu_prefer_vector_width=512`` to ``XLA_FLAGS`` before JAX starts, where
    :func:`cpu_has_avx512` and the installed jaxlib is one whose XLA is known to have the flag,
    unless ``XLA_FLAGS`` sets a width already (yours wins: ``=256`` is XLA's default) or JAX
    has started its backends (a ``UserWarning`` unless ``quiet``). The ``purejaxpo lm``
    commands call it. Kernels may round differently (last bits), not compute otherwise.

    Returns:
      True if the flag was added by this call.
    """
    if _VECTOR_FLAG in os.environ.get("XLA_FLAGS", "") or not cpu_has_avx512():
        return False
    return _add_xla_flags(lambda: [f"{_VECTOR_FLAG}=512"],
                          "use_wide_vectors() came after JAX started its backends: XLA_FLAGS "
                          "are read once; call it first thing", quiet)


def fused_loops_active() -> bool:
    """Whether this process's XLA compiles small loops to one kernel (:func:`use_fused_loops`'s
    threshold is in ``XLA_FLAGS``) and JAX's default backend is the CPU."""
    import jax

    return _THRESHOLD_OPTION in os.environ.get("XLA_FLAGS", "") and jax.default_backend() == "cpu"



SAFE_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def use_safe_scheduler(*, quiet: bool = False) -> bool:
    """Adds ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` to ``XLA_FLAGS``: for
    your own code that runs QR, SVD or other LAPACK routines under ``vmap``.

    With jaxlib 0.10.x on a small CPU machine, XLA's CPU runtime can hang forever on
    ``jit(vmap(f))`` when ``f`` runs QR (e.g. ``jax.nn.initializers.orthogonal`` drawing one
    network per seed): under ``vmap`` the QR is a batched LAPACK call that the
    concurrency-optimised scheduler splits into sub-tasks, and both worker threads of a 2-core
    machine end up waiting on sub-tasks queued to the same pool. purejaxpo's own programs hold
    no LAPACK call (its networks draw orthogonal weights by Gram-Schmidt,
    :func:`purejaxpo.networks.orthogonal`), so this is off by default: on the 2-core CI machine
    it made PPO on CartPole-v1 about a third slower (run time 4.3-4.9 s against 3.3-3.9 s).

    Nothing is changed if the installed jaxlib is not 0.10 or 0.11, if ``XLA_FLAGS`` already
    sets the flag (your value wins), or if JAX has started its backends (a ``UserWarning``
    unless ``quiet``). Returns True if the flag was added by this call.
    """
    if SAFE_SCHEDULER_FLAG in os.environ.get("XLA_FLAGS", ""):
        return False
    return _add_xla_flags(lambda: [f"{SAFE_SCHEDULER_FLAG}=false"],
                          "use_safe_scheduler() came after JAX started its backends: XLA_FLAGS "
                          "are read once; call it first thing", quiet)


# ---------------------------------------------------------------------------------------------
# Dense layers.

SMALL_PRODUCT_ROWS = 8
"""Dense layers over at most this many rows in all multiply and sum (:func:`small_rows_dot`)."""

_RUNS_PER_PROGRAM: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "purejaxpo_runs_per_program", default=None)


@contextlib.contextmanager
def runs_per_program(runs: int | None):
    """While tracing in this context, a program holds ``runs`` vmapped runs (None: unknown).

    :func:`small_rows_dot` multiplies and sums only where a layer's rows times ``runs`` is at
    most :data:`SMALL_PRODUCT_ROWS`; outside this context (``runs`` unknown) every layer is a
    matrix product. :func:`purejaxpo.devices.vmap_runs` and the sweeps enter it through the
    ``trace_runs`` hook (:func:`trace_runs`) when XLA:CPU compiles small loops to one kernel
    (:func:`use_fused_loops`).
    """
    token = _RUNS_PER_PROGRAM.set(runs)
    try:
        yield
    finally:
        _RUNS_PER_PROGRAM.reset(token)


def small_rows_dot(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """``dot_general`` of the dense layers: a broadcast multiply and a sum for a small input
    (a rollout step over a few envs, in a program of few runs: :func:`runs_per_program`), else
    a matrix product (:func:`dense_product`, whose weight gradient is a row-major product).

    Why: XLA:CPU hands matrix products to a library (YNNPACK), and a loop containing a library
    call runs as a loop of separately dispatched kernels, about 60 per CartPole rollout step
    (0.1-1 us each, several times the step's arithmetic). A multiply and a sum is plain loop
    code, so with :func:`use_fused_loops` XLA compiles a rollout's whole
    ``scan`` into one kernel. Measured (2-core AMD EPYC, ``benchmarks/ppo_update_ab.py``,
    variant ``products``): one PPO CartPole update 1.86 ms this way against 2.28 ms with
    products, 4 vmapped runs 8.69 against 9.09 ms, but 8 runs 19.0 against 15.8 ms: over more
    rows the fused kernel's sums are slower than the library's batched products, hence the
    limit on rows times runs. The sum runs over the same terms in another order, so the
    layer's outputs differ from a product's in the last bits; the learning update (hundreds
    of rows) always uses products.
    """
    (contract_lhs, contract_rhs), (batch_lhs, batch_rhs) = dimension_numbers
    # a dense layer's product: x [..., K] @ w [K, N]
    dense = (rhs.ndim == 2 and not batch_lhs and not batch_rhs
             and tuple(contract_lhs) == (lhs.ndim - 1,) and tuple(contract_rhs) == (0,))
    runs = _RUNS_PER_PROGRAM.get()
    rows = math.prod(lhs.shape[:-1]) * (runs or 0)
    if dense and runs is not None and rows <= SMALL_PRODUCT_ROWS:
        out = jnp.sum(lhs[..., :, None] * rhs, axis=-2)
        return out if preferred_element_type is None else out.astype(preferred_element_type)
    if (dense and TRANSPOSED_WEIGHT_GRADIENTS and precision is None
            and preferred_element_type is None):
        return dense_product(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)


TRANSPOSED_WEIGHT_GRADIENTS = True
"""Dense layers differentiate through :func:`dense_product` (False: plain ``dot_general``)."""


@jax.custom_jvp
def dense_product(x, w):
    """``x [..., K] @ w [K, N]``, whose weight gradient is a plain product of a transposed copy
    of ``x``.

    Reverse-mode autodiff of ``x @ w`` gives the weight gradient ``x^T g`` as a ``dot_general``
    contracting the rows of both operands, a form XLA:CPU leaves to its own loop emitter
    instead of a matrix library: for a PPO minibatch of 128 rows it ran a ``[64, 2]`` policy
    head gradient (16k multiply-adds) in about 18 us, a ``[64, 64]`` one in 21-24 us
    (``benchmarks/ppo_update_ab.py --trace``, 2-core AMD EPYC). Here the tangent rule
    multiplies ``dw`` by the transpose of a ``[K, M]`` copy of ``x`` kept by an optimisation
    barrier, so the transposed rule is ``copy @ g``, a row-major ``[K, M] @ [M, N]`` product.
    A custom JVP rather than a custom VJP, so forward-mode and higher-order derivatives (TRPO's
    Fisher-vector product, a ``jvp`` of a ``grad``) still work. The value is ``x @ w``; the
    gradients are the same sums, possibly in another order.
    """
    return x @ w


@dense_product.defjvp
def _dense_product_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    rows = x.reshape(-1, x.shape[-1])
    copy = jax.lax.optimization_barrier(jnp.swapaxes(rows, 0, 1))  # [K, M], materialised
    return x @ w, dx @ w + (copy.T @ dw).reshape(*x.shape[:-1], w.shape[-1])



# ---------------------------------------------------------------------------------------------
# Runs per program.

def trace_runs(fn: Callable, runs: int) -> Callable:
    """The ``trace_runs`` hook: ``fn`` traced with :func:`runs_per_program` ``runs`` when loops
    are fused on a CPU (:func:`fused_loops_active`), so that a rollout over few envs and runs
    is written for one kernel (:func:`small_rows_dot`); ``fn`` unchanged otherwise."""
    if not fused_loops_active():
        return fn

    def traced(*args):
        with runs_per_program(runs):
            return fn(*args)

    return traced



# ---------------------------------------------------------------------------------------------
# Convolutions.

def _same_pads(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """``(before, after)`` zero rows of a SAME convolution, as ``lax.padtype_to_pads``."""
    rows_out = -(-n // stride)  # ceil(n / stride)
    total = max((rows_out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


class PatchConv(nn.Module):
    """The ``conv`` hook: a convolution as one matmul over image patches: ``[..., H, W, C] ->
    [..., H', W', features]``, the parameters of ``flax.linen.Conv`` (kernel ``[k, k, C,
    features]`` drawn by ``kernel_init``, zero bias); ``padding`` ``"valid"`` or ``"same"``
    (zero rows and columns around the image first, as ``lax``'s "SAME").

    Why not ``nn.Conv``: on XLA:CPU, the small convolutions of a MinAtar policy (10 x 10
    images), their gradients and their ``vmap`` over seeds (a grouped convolution) ran PPO
    at about 1.8k env steps/s on 2 cores; gathering the k x k patches with k^2 slices and
    multiplying by the flattened kernel is the same arithmetic in ordinary dense ops, which
    XLA batches and fuses well: 9.8k env steps/s in the same run (measured 2026-11-30, jax
    0.10.2). ``tests/test_backends_cpu.py`` checks it against a NumPy loop and
    ``flax.linen.Conv``.
    """

    features: int
    kernel: int
    stride: int = 1
    padding: str = "valid"
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        k, s = self.kernel, self.stride
        c = x.shape[-1]
        if self.padding == "same":
            pads = [_same_pads(x.shape[-3], k, s), _same_pads(x.shape[-2], k, s), (0, 0)]
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + pads)
        w = self.param("kernel", self.kernel_init, (k, k, c, self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        h_out = (x.shape[-3] - k) // s + 1
        w_out = (x.shape[-2] - k) // s + 1
        patches = jnp.concatenate([
            x[..., i:i + s * (h_out - 1) + 1:s, j:j + s * (w_out - 1) + 1:s, :]
            for i in range(k) for j in range(k)], axis=-1)  # [..., H', W', k * k * C]
        return patches @ w.reshape(k * k * c, self.features) + b



# ---------------------------------------------------------------------------------------------
# The minibatch shuffle.

PACKED_SHUFFLE_MAX = 1 << 16
"""The largest ``N`` :func:`packed_permutation` shuffles with packed words (above: keys)."""


def packed_permutation(key, n: int) -> jax.Array:
    """The ``permutation`` hook: a random permutation of ``range(n)`` (int32 ``[n]``; ``n``
    static), for minibatches, faster on XLA:CPU and not exactly uniform (below).

    ``jax.random.permutation`` sorts random keys with the indices as a second operand, which
    XLA:CPU runs about 3.5x slower than a sort of one operand (about 165 us against 47 us for
    512 indices on a 2-core CPU, and it does not amortise over vmapped seeds: 2.8 ms against
    0.63 ms for 16); in a small PPO update that was about a tenth of the update's time. Here a
    round sorts single uint32 words whose low ``b = ceil(log2 n)`` bits hold a position and
    whose high ``32 - b`` bits are random, then reads the positions back in sorted order.

    The order is uniform except for a pair whose random parts tie in every round, which keeps
    its index order. Rounds (each shuffling the last) are added until together they hold at
    least ``2 b`` random bits, so the expected number of such pairs, ``n (n - 1) / 2 /
    2**bits``, stays below 1/2 whatever ``n`` (0.016 for ``n = 512``: one round of 23 bits).
    Above :data:`PACKED_SHUFFLE_MAX` indices it is ``jax.random.permutation``.
    """
    if n > PACKED_SHUFFLE_MAX:
        return jax.random.permutation(key, n)
    b = max(1, (n - 1).bit_length())
    rounds = -(-2 * b // (32 - b))  # ceil: (32 - b) * rounds >= 2 b
    positions = jnp.arange(n, dtype=jnp.uint32)
    mask = jnp.uint32((1 << b) - 1)
    perm = jnp.arange(n, dtype=jnp.int32)
    for round_key in jax.random.split(key, rounds):
        words = (jax.random.bits(round_key, (n,), jnp.uint32) << b) | positions
        perm = perm[(jnp.sort(words) & mask).astype(jnp.int32)]
    return perm



# ---------------------------------------------------------------------------------------------
# LM decoding.

class Tail(NamedTuple):
    """A ``tail`` for :func:`purejaxpo.lm.sampling.generate`: decode only the unfinished rows
    after ``start`` tokens (static).

    The first ``start`` tokens are decoded for every row, attending to the cache slots filled
    so far (the prompt and ``start`` tokens); then the cache grows to its full length and
    only the rows not yet finished are decoded, as one batch of ``R`` rows, the first of ``0,
    rows, 2 rows, 4 rows, ..., B`` that holds them all (one ``lax.switch`` over those static
    sizes: once more than ``rows`` are live, at most twice as many; the whole batch when more
    than half are). The tokens are the same as without (each row keeps its own noise and
    attends to the same keys), for less work when completions end early: from an untrained
    15-token policy, 64 completions of up to 32 tokens average 14 tokens, and about a third
    are still going at token 16. Measured (8 x 8 prompts, 32 tokens, context 64): ``generate``
    29.0 against 22.8 ms, a whole GRPO step 99.6 against 91.9 ms.

    Under ``vmap`` (a sweep) the switch runs every size's branch (a batched index selects
    among all of them), so vmapped runs should decode without a tail (the sweeps do).
    """

    start: int
    rows: int

    def check(self, batch: int, steps: int) -> None:
        """``ValueError`` unless ``start`` is within ``[1, steps)`` and ``rows`` in
        ``[1, batch]``."""
        if not 1 <= self.start < steps:
            raise ValueError(f"tail.start={self.start} is invalid: must be in [1, {steps - 1}] "
                             f"for these completions")
        if not 1 <= self.rows <= batch:
            raise ValueError(f"tail.rows={self.rows} is invalid: must be in [1, {batch}] (the "
                             f"batch)")

    def head_slots(self, prompt_len: int, new_tokens: int) -> int:
        """The cache slots the prompt's pass fills: the prompt and the first ``start``
        tokens (the cache grows to ``prompt_len + new_tokens`` later)."""
        del new_tokens
        return prompt_len + self.start

    def decode(self, decoder, finish, carry, draws, slots: int, pad_id: int):
        """``(tokens, mask)`` ``[B, N]`` decoded from ``carry`` (``(cache, logits, done)``
        after the prompt), as :func:`~purejaxpo.lm.sampling.generate` calls it.

        ``decoder()`` is generate's scan step over every row; ``finish(carry, draws, rows)``
        decodes ``len(draws)`` tokens of the sequences ``rows`` (None: all); ``draws`` are the
        ``N`` steps' keys or noise; ``slots`` the full cache length."""
        (cache, logits, done), (head, head_mask) = jax.lax.scan(
            decoder(), carry, draws[:self.start])
        cache = _grow(cache, slots)
        batch, rest = done.shape[0], draws.shape[0] - self.start
        tokens, mask = _over_live_rows(
            ~done, self.rows,
            lambda rows, c: finish((c[0]._replace(index=cache.index), *c[1:]),
                                   draws[self.start:], rows),
            (cache._replace(index=None), logits, done),  # the index is every row's
            (jnp.full((batch, rest), pad_id, jnp.int32), jnp.zeros((batch, rest), bool)))
        return (jnp.concatenate([head.T, tokens], axis=1),
                jnp.concatenate([head_mask.T, mask], axis=1))


def live_tail(batch: int, new_tokens: int) -> Tail | None:
    """The ``decoding_tail`` hook, the :class:`Tail` purejaxpo's trainers use: from the middle
    of ``new_tokens`` on, at least half the batch at a time (a quarter measured no faster: a
    step is one token per row); None for fewer than 8 tokens (a tail of a few steps saves less
    than its gathers cost) or a batch of one."""
    if new_tokens < 8 or batch < 2:
        return None
    return Tail(start=new_tokens // 2, rows=batch // 2)


def _grow(cache, slots: int):
    """``cache`` with empty slots appended up to ``slots``."""
    more = slots - cache.valid.shape[1]
    if more <= 0:
        return cache
    pad = lambda x: jnp.pad(x, [(0, 0), (0, 0), (0, more), (0, 0)])  # noqa: E731
    return cache._replace(k=tuple(map(pad, cache.k)), v=tuple(map(pad, cache.v)),
                          valid=jnp.pad(cache.valid, [(0, 0), (0, more)]))


def _over_live_rows(live: jax.Array, smallest: int, fn, data, outs):
    """``fn(rows, data) -> tree of [R, ...]`` for the rows where ``live`` ``[B]`` is true,
    written into ``outs`` (a tree of ``[B, ...]``, kept in the other rows).

    ``R`` is the first of ``0, smallest, 2 smallest, ..., B`` that holds every live row (one
    ``lax.switch`` over the static sizes). ``fn`` gets ``rows`` ``[R]`` (live rows first; the
    padding repeats row ``B - 1`` and is dropped) and ``data`` (a tree of ``[B, ...]``)
    gathered at them; for ``R = B``, ``rows=None`` and ``data`` as it is."""
    batch = live.shape[0]
    sizes = [0]
    while sizes[-1] < batch:
        sizes.append(min(batch, max(smallest, 2 * sizes[-1])))
    order = jnp.nonzero(live, size=batch, fill_value=batch)[0]

    def branch(size):
        def run():
            if size == 0:
                return outs
            if size == batch:
                return fn(None, data)
            rows = order[:size]
            safe = jnp.minimum(rows, batch - 1)
            new = fn(safe, jax.tree_util.tree_map(lambda x: x[safe], data))
            return jax.tree_util.tree_map(lambda o, n: o.at[rows].set(n, mode="drop"),
                                          outs, new)
        return run

    which = jnp.searchsorted(jnp.asarray(sizes), jnp.sum(live, dtype=jnp.int32))
    return jax.lax.switch(which, [branch(size) for size in sizes])


PRECOMPUTED_NOISE_ELEMENTS = 1 << 22
""":func:`step_noise` draws every step's Gumbel noise before decoding when it has at most this
many elements (``N x B x V``, 16 MB in float32); else each step draws its own."""


def step_noise(keys, shape, dtype):
    """The ``decoding_noise`` hook: every decoding step's Gumbel noise ``[N, *shape]`` (``shape``
    the ``[B, V]`` logits) in one draw before the loop, or None when larger than
    :data:`PRECOMPUTED_NOISE_ELEMENTS`.

    ``jax.random.categorical(key, logits)`` is the argmax of ``logits`` plus
    ``jax.random.gumbel(key, logits.shape, logits.dtype)``; drawn here with the same keys,
    shapes and dtype, the noise is the same numbers, so the tokens are the same. On a CPU the
    draw inside each step's argmax ran as one scalar loop (about 37 us per step for 64 x 15
    logits, 2-core AMD EPYC); drawn before, it is one vectorised kernel for all steps.
    """
    if keys.shape[0] * math.prod(shape) > PRECOMPUTED_NOISE_ELEMENTS:
        return None
    return jax.vmap(lambda k: jax.random.gumbel(k, shape, dtype))(keys)


# ---------------------------------------------------------------------------------------------
# The backend.

def _conv(features, kernel, stride, padding, kernel_init, name):
    return PatchConv(features, kernel, stride, padding, kernel_init, name=name)


BACKEND = backends.Backend(
    name="cpu",
    dense_dot_general=small_rows_dot,
    conv=_conv,
    loop_key=threefry.fast_key,
    permutation=packed_permutation,
    trace_runs=trace_runs,
    decoding_tail=live_tail,
    decoding_noise=step_noise,
)
"""The CPU hooks (see the module docstring); :func:`enable` activates them."""


def enable(*, fused_loops: bool = True, wide_vectors: bool = True,
           cpu_devices: int | str | None = "auto", quiet: bool = False) -> bool:
    """Turns the CPU backend on: call it first thing in a script, before JAX makes an array.

    1. XLA flags (read once, when JAX starts its backends): with ``fused_loops``
       :func:`use_fused_loops` (and its 512-bit vector width where the CPU has AVX-512 and
       ``wide_vectors``), else with ``wide_vectors`` :func:`use_wide_vectors` alone (what the
       ``purejaxpo lm`` commands ask for: the fused-loop settings slow a transformer's
       sampling).
    2. ``cpu_devices``: ``"auto"`` one JAX CPU device per core (:func:`use_cpu_cores`; an
       explicit ``XLA_FLAGS`` device count is kept), an integer that many, None: left as it is.
    3. Where JAX's default backend is then the CPU, the CPU hooks (:data:`BACKEND`) for every
       program traced from now on (:func:`purejaxpo.backends.activate`). On a GPU or TPU the
       hooks stay off; the flags, being XLA:CPU options, change nothing there.

    Returns:
      True if the CPU hooks are active.
    """
    if fused_loops:
        use_fused_loops(wide_vectors=wide_vectors, quiet=quiet)
    elif wide_vectors:
        use_wide_vectors(quiet=quiet)
    if cpu_devices is not None:
        use_cpu_cores(None if cpu_devices == "auto" else cpu_devices, quiet=quiet)
    if jax.default_backend() != "cpu":
        return False
    backends.activate(BACKEND)
    return True


def disable() -> None:
    """Switches the CPU hooks off for programs traced from now on (XLA flags, read once, stay)."""
    backends.activate(backends.DEFAULT)
