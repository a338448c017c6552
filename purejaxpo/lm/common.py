"""What the language-model trainers (SFT, GRPO, DPO) share: state, evaluation, the step loop.

A trainer is a pure ``step(state, hyperparams, *consts) -> (state, metrics)``; :func:`run_loop`
compiles ``chunk`` steps into one ``lax.scan`` and runs chunks from Python, so long runs show
progress and held-out evaluations between chunks without leaving compiled code for each step.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from purejaxpo.envs.sequence_tasks import SequenceTask, TaskBatch
from purejaxpo.lm.model import TransformerConfig
from purejaxpo.lm.sampling import generate
from purejaxpo.update import make_optimizer

Array = jax.Array


class LMState(NamedTuple):
    """Everything a trainer carries from one step to the next."""

    params: Any
    opt_state: Any
    key: Array
    step: Array


def optimizer(hyperparams: Mapping[str, Array]) -> optax.GradientTransformation:
    """Global-norm clipping then Adam at a constant, possibly traced, learning rate.

    The state's structure does not depend on the values, so a state initialised with one set
    of hyperparameters is updated with another (that is what makes them sweepable).
    """
    return make_optimizer(lambda count: hyperparams["learning_rate"],
                          hyperparams["max_grad_norm"], eps=1e-8)


def init_state(key: Array, params, hyperparams: Mapping[str, Array]) -> LMState:
    return LMState(params=params, opt_state=optimizer(hyperparams).init(params), key=key,
                   step=jnp.zeros((), jnp.int32))


def greedy_completions(params, model: TransformerConfig, task: SequenceTask, batch: TaskBatch,
                       max_new_tokens: int | None = None):
    """Greedy completions ``[B, N]`` of ``batch``'s prompts (jittable)."""
    tok = task.tokenizer
    return generate(
        jax.random.PRNGKey(0), params, model, batch.prompts, batch.prompt_valid,
        max_new_tokens=max_new_tokens or task.answer_len, eos_id=tok.eos_id, pad_id=tok.pad_id,
        greedy=True)


def greedy_exact_match(params, model: TransformerConfig, task: SequenceTask, batch: TaskBatch,
                       max_new_tokens: int | None = None) -> Array:
    """Fraction of ``batch`` whose greedy completion is exactly right (jittable)."""
    completions = greedy_completions(params, model, task, batch, max_new_tokens)
    return jnp.mean(task.exact_match(batch, completions.tokens, completions.mask))


VALIDATION_SEED = 2**31 - 2  # early stopping looks at these prompts, never at the held-out set


def make_evaluator(model: TransformerConfig, task: SequenceTask, num_prompts: int = 512,
                   max_new_tokens: int | None = None, *, validation: bool = False
                   ) -> Callable[[Any], float]:
    """``params -> greedy exact match`` on the task's fixed held-out prompts (or, with
    ``validation``, on a second fixed set used for early stopping)."""
    batch = task.heldout(num_prompts, seed=VALIDATION_SEED) if validation else \
        task.heldout(num_prompts)
    fn = jax.jit(lambda params: greedy_exact_match(params, model, task, batch, max_new_tokens))
    return lambda params: float(fn(params))


def run_loop(
    step: Callable,
    state: LMState,
    num_steps: int,
    hyperparams: Mapping[str, Array],
    *consts,
    chunk: int = 50,
    on_chunk: Callable[[int, LMState, dict[str, np.ndarray]], bool | None] | None = None,
) -> tuple[LMState, dict[str, np.ndarray], float]:
    """Runs ``num_steps`` of ``step`` in jitted chunks of ``chunk`` steps.

    Args:
      step: ``(state, hyperparams, *consts) -> (state, metrics)``, pure.
      state: the initial state.
      num_steps: total steps.
      hyperparams: traced settings (a dict of arrays).
      consts: further arguments that stay fixed (e.g. the reference parameters).
      chunk: steps per compiled ``lax.scan``.
      on_chunk: called after each chunk with ``(steps_done, state, chunk_metrics)`` (host side;
        for progress bars, evaluation, logs); returning True stops the run there (early
        stopping). Time spent in it is not counted in ``run_s``.

    Returns:
      ``(state, metrics, run_s)``: metrics stacked over the steps run (``[steps]`` each, NumPy),
      and the seconds spent running steps, compilation excluded (each chunk length is compiled
      before its first timed run).
    """
    compiled: dict[int, Callable] = {}

    def chunk_fn(length):
        if length not in compiled:
            def run(state, hyperparams, *consts):
                return jax.lax.scan(lambda s, _: step(s, hyperparams, *consts), state, None,
                                    length=length)
            compiled[length] = jax.jit(run).lower(state, hyperparams, *consts).compile()
        return compiled[length]

    history: list[dict[str, np.ndarray]] = []
    run_s = 0.0
    done = 0
    while done < num_steps:
        length = min(chunk, num_steps - done)
        fn = chunk_fn(length)
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(fn(state, hyperparams, *consts))
        run_s += time.perf_counter() - start
        done += length
        metrics = jax.tree_util.tree_map(np.asarray, metrics)
        history.append(metrics)
        if on_chunk is not None and on_chunk(done, state, metrics):
            break
    stacked = {k: np.concatenate([h[k] for h in history]) for k in history[0]} if history else {}
    return state, stacked, run_s


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the final :class:`LMState`.
      metrics: per-step training metrics, ``[steps]`` arrays.
      curve: ``(steps_done, held-out exact match)`` after each chunk (and at step 0).
      run_s: seconds spent in training steps (compilation and evaluation excluded).
    """

    state: LMState
    metrics: dict[str, np.ndarray]
    curve: list[tuple[int, float]]
    run_s: float

    @property
    def exact_match_before(self) -> float:
        return self.curve[0][1]

    @property
    def exact_match_after(self) -> float:
        return self.curve[-1][1]


def fit(step: Callable, state: LMState, num_steps: int, hyperparams: Mapping[str, Array],
        *consts, evaluate: Callable[[Any], float], chunk: int, progress: bool = True,
        desc: str = "train", show: tuple[str, ...] = (),
        stop: Callable[[Any], bool] | None = None) -> FitResult:
    """:func:`run_loop` with a held-out evaluation after every chunk and a progress bar.

    ``show`` names metrics whose latest chunk mean the progress bar displays. ``stop(params)``,
    if given, is asked after every chunk whether to stop early.
    """
    from tqdm.auto import tqdm

    curve = [(0, evaluate(state.params))]
    bar = tqdm(total=num_steps, desc=desc, disable=not progress, leave=False)

    def on_chunk(done, state, metrics):
        curve.append((done, evaluate(state.params)))
        bar.update(done - bar.n)
        shown = {k: f"{float(np.mean(metrics[k])):.3g}" for k in show if k in metrics}
        bar.set_postfix(heldout_em=f"{curve[-1][1]:.3f}", **shown)
        return stop is not None and stop(state.params)

    try:
        state, metrics, run_s = run_loop(step, state, num_steps, hyperparams, *consts,
                                         chunk=chunk, on_chunk=on_chunk)
    finally:
        bar.close()
    return FitResult(state, metrics, curve, run_s)
