"""What the language-model trainers (SFT, GRPO, DPO, reward model) share: state, evaluation,
the step loop, divergence detection and the run summary.

A trainer is a pure ``step(state, hyperparams, *consts) -> (state, metrics)``; :func:`lm_program`
makes it a :class:`~purejaxpo.algos.base.Program` (``init``, and ``run``: ``n`` steps in one
``lax.scan``), the same two pieces as the environment algorithms', and :func:`fit` runs the
program in compiled chunks from Python (:func:`purejaxpo.checkpoint.run_with_checkpoints`), so
long runs show progress, held-out evaluations and checkpoints between chunks without leaving
compiled code for each step.

Divergence: inside the compiled chunk every step also records the metric ``nonfinite``
(:data:`purejaxpo.metrics.NONFINITE`, as the environment trainers do): 1.0 when the step's loss
or the parameters it produced are not finite (non-finite gradients make the parameters
non-finite through clipping and Adam). It comes back with the other per-step metrics, so the
first diverged step is exact and costs no host synchronisation;
:attr:`FitResult.diverged_at_step` reports it, and held-out scores after it are NaN.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from purejaxpo import checkpoint
from purejaxpo.algos.base import Program
from purejaxpo.lm.lora import adapters_off, has_adapters, train_adapters_only
from purejaxpo.lm.model import TransformerConfig
from purejaxpo.lm.sampling import generate
from purejaxpo.lm.tasks.sequence import SequenceTask, TaskBatch
from purejaxpo.metrics import NONFINITE, all_finite, divergence, nonfinite
from purejaxpo.settings import json_safe
from purejaxpo.update import make_optimizer

Array = jax.Array


class LMState(NamedTuple):
    """Everything a trainer carries from one step to the next (and a checkpoint saves).

    Attributes:
      params: the trained model's parameters.
      opt_state: the optimiser's state.
      key: the PRNG key of the next step (the data position too: every trainer draws its
        prompts, or its minibatch of pairs, from it).
      step: steps done.
      hyperparams: the run's traced settings (``config.hyperparams()``, or one setting of a
        sweep), read by :func:`lm_program`'s ``run``; None where a step is called by hand
        with its hyperparameters passed apart (:func:`init_state`).
      ref: what the trainer's step takes from the reference model: its parameters (GRPO with
        ``beta > 0``, ``reinforce_pp``; DPO with ``precompute_ref=False``) or its log-probs of
        the whole dataset (DPO); None where there is none.
    """

    params: Any
    opt_state: Any
    key: Array
    step: Array
    hyperparams: Any = None
    ref: Any = None


def optimizer(hyperparams: Mapping[str, Array]) -> optax.GradientTransformation:
    """Global-norm clipping then Adam at a constant, possibly traced, learning rate; on the
    LoRA adapters alone where the parameters have them (:func:`purejaxpo.lm.lora.
    train_adapters_only`).

    The state's structure does not depend on the values, so a state initialised with one set
    of hyperparameters is updated with another (that is what makes them sweepable).
    """
    return train_adapters_only(make_optimizer(lambda count: hyperparams["learning_rate"],
                                              hyperparams["max_grad_norm"], eps=1e-8))


def init_state(key: Array, params, hyperparams: Mapping[str, Array]) -> LMState:
    """A state at step 0 for calling a trainer's ``step`` by hand (its hyperparameters passed
    apart, no reference kept); a run starts from :func:`lm_program`'s ``init`` instead."""
    return LMState(params=params, opt_state=optimizer(hyperparams).init(params), key=key,
                   step=jnp.zeros((), jnp.int32))


class FromParams(NamedTuple):
    """A reference computed in every step from the current parameters instead of stored in
    the state: ``fn(params)``, e.g. :func:`purejaxpo.lm.lora.adapters_off` (the base model
    under LoRA), so the reference model takes no memory of its own."""

    fn: Callable[[Any], Any]


def reference_of(policy_params, select: Callable[[Any], Any] = lambda p: p):
    """What :func:`lm_program` takes as ``reference`` for "the starting policy": free
    (:class:`FromParams` with the adapters off) where ``policy_params`` have LoRA adapters,
    else the starting parameters, kept in the state. ``select`` picks the policy's parameters
    out of the trained tree (e.g. PPO's ``p["policy"]``)."""
    if has_adapters(policy_params):
        return FromParams(lambda p: adapters_off(select(p)))
    return select


def lm_program(step: Callable, *, num_steps: int, hyperparams: Mapping[str, Array],
               start: Callable[[Array], tuple[Any, Array]],
               reference: Callable[[Any], Any] | FromParams | None = None,
               consts: tuple = ()):
    """A trainer's :class:`~purejaxpo.algos.base.Program`: the same two pure pieces as the
    environment algorithms', so that seeds and settings vmap, and runs checkpoint and resume,
    through the same code (:func:`purejaxpo.checkpoint.run_with_checkpoints`).

    * ``init(key, hyperparams=None) -> LMState``: ``start(key) -> (params, run_key)`` gives the
      starting parameters (random ones from the key for a model trained from scratch, given
      ones otherwise) and the key the steps draw from; ``reference(params)``, if given, what
      the step takes from the reference model (kept in ``state.ref``, so checkpointed;
      a :class:`FromParams` reference is not kept, but computed in each step);
      missing hyperparameters are filled from ``hyperparams``.
    * ``run(state, n) -> (state, metrics)``: ``n`` (static) steps in one ``lax.scan``, each
      ``step(state, state.hyperparams, *consts[, state.ref]) -> (state, metrics)`` (the
      reference last, where there is one), with the ``nonfinite`` flag added (the first
      diverged step is exact, with no host synchronisation). ``run(run(s, a)[0], b)``
      continues exactly as ``run(s, a + b)``.

    ``consts`` (e.g. a preference dataset) are fixed arrays the step reads; they are
    constants of the compiled program, rebuilt from the config on resume.
    """
    defaults = {k: jnp.asarray(v) for k, v in hyperparams.items()}

    def init(key, hyperparams=None) -> LMState:
        unknown = set(hyperparams or {}) - set(defaults)
        if unknown:
            raise ValueError(f"hyperparams: {sorted(unknown)} are not sweepable settings of "
                             f"this trainer (those are {sorted(defaults)})")
        hp = {k: jnp.asarray((hyperparams or {}).get(k, v), v.dtype)
              for k, v in defaults.items()}
        params, run_key = start(key)
        ref = None if reference is None or isinstance(reference, FromParams) else \
            reference(params)
        return LMState(params, optimizer(hp).init(params), run_key,
                       jnp.zeros((), jnp.int32), hp, ref)

    def run(state: LMState, num_updates: int):
        def one(state, _):
            if isinstance(reference, FromParams):
                args = (*consts, reference.fn(state.params))
            else:
                args = (*consts, state.ref) if reference is not None else consts
            new, metrics = step(state, state.hyperparams, *args)
            return new, {**metrics, NONFINITE: nonfinite(new.params, metrics.get("loss"))}

        return jax.lax.scan(one, state, None, length=num_updates)

    return Program(init, run, num_steps)


def greedy_completions(params, model: TransformerConfig, task: SequenceTask, batch: TaskBatch,
                       max_new_tokens: int | None = None):
    """Greedy completions ``[B, N]`` of ``batch``'s prompts (jittable)."""
    tok = task.tokenizer
    return generate(
        jax.random.PRNGKey(0), params, model, batch.prompts, batch.prompt_valid,
        max_new_tokens=max_new_tokens or task.answer_len, eos_id=tok.eos_id, pad_id=tok.pad_id,
        greedy=True, tools=task.tool_use)


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
    ``validation``, on a second fixed set used for early stopping); NaN for parameters that
    are not all finite (whose greedy answers would give a plausible-looking number)."""
    batch = task.heldout(num_prompts, seed=VALIDATION_SEED) if validation else \
        task.heldout(num_prompts)
    fn = jax.jit(lambda params: if_finite(
        params, greedy_exact_match(params, model, task, batch, max_new_tokens)))
    return lambda params: float(fn(params))


def if_finite(params, score: Array) -> Array:
    """``score`` where ``params`` are all finite, else NaN (jittable)."""
    return jnp.where(all_finite(params), score, jnp.nan)


def diverged_at_step(metrics: Mapping[str, np.ndarray]) -> int | None:
    """The first step, counting from 1 (metrics index + 1), whose loss or new parameters were
    not finite, from the metrics of :func:`lm_program`'s ``run`` (``[steps]`` each, with
    ``nonfinite``); None if there was none."""
    if NONFINITE not in metrics:
        return None
    diverged, first = divergence(metrics)
    return int(first) + 1 if bool(diverged) else None


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the final :class:`LMState`.
      metrics: per-step training metrics, ``[steps]`` arrays (``nonfinite`` included).
      curve: ``(steps_done, held-out score)`` after each chunk (and at step 0): greedy exact
        match for the policy trainers, ranking accuracy for the reward model; NaN once the
        run has diverged.
      run_s: seconds spent in training steps (compilation and evaluation excluded).
      resumed_from: the checkpoint's step this call resumed from (0: started afresh).
    """

    state: LMState
    metrics: dict[str, np.ndarray]
    curve: list[tuple[int, float]]
    run_s: float
    resumed_from: int = 0

    @property
    def steps_run(self) -> int:
        """Steps run by this call (``run_s`` covers these): fewer than :attr:`steps` when it
        resumed from a checkpoint."""
        return self.steps - self.resumed_from

    def run_total(self, name: str) -> float:
        """The sum of the metric ``name`` over the steps this call ran (for throughputs)."""
        return float(np.sum(self.metrics[name][self.resumed_from:]))

    @property
    def exact_match_before(self) -> float:
        return self.curve[0][1]

    @property
    def exact_match_after(self) -> float:
        return self.curve[-1][1]

    @property
    def steps(self) -> int:
        """Steps run (fewer than asked for after an early stop)."""
        return len(next(iter(self.metrics.values()))) if self.metrics else 0

    @property
    def diverged_at_step(self) -> int | None:
        """The first step (from 1) whose loss or parameters were not finite, or None."""
        return diverged_at_step(self.metrics)

    @property
    def diverged(self) -> bool:
        return self.diverged_at_step is not None

    def curve_summary(self, score: str = "exact_match") -> list[dict[str, float]]:
        """One row per evaluation: ``step``, ``heldout_<score>`` and (after step 0) the
        chunk's means of the training metrics."""
        rows = []
        for i, (step, value) in enumerate(self.curve):
            row = {"step": step, f"heldout_{score}": value}
            if i > 0:
                lo = self.curve[i - 1][0]
                row.update({k: float(np.mean(v[lo:step])) for k, v in self.metrics.items()})
            rows.append(row)
        return rows

    def summary(self, score: str = "exact_match") -> dict[str, Any]:
        """The run's results as a JSON-ready dict (non-finite numbers as None):
        ``<score>_before``, ``<score>_after``, ``steps``, ``run_s``, ``diverged``,
        ``diverged_at_step`` and ``curve`` (:meth:`curve_summary`)."""
        return json_safe({
            f"{score}_before": self.curve[0][1],
            f"{score}_after": self.curve[-1][1],
            "steps": self.steps,
            "run_s": self.run_s,
            "diverged": self.diverged,
            "diverged_at_step": self.diverged_at_step,
            "curve": self.curve_summary(score),
        })


def divergence_warning(step: int | None) -> str | None:
    """The one-line warning for a run that diverged at ``step`` (None if it did not)."""
    if step is None:
        return None
    return (f"warning: training diverged at step {step} (non-finite loss/parameters); "
            "results after it are meaningless")


def fit(program, key: Array, *, evaluate: Callable[[Any], float], chunk: int,
        hyperparams: Mapping[str, Array] | None = None, progress: bool = True,
        desc: str = "train", show: tuple[str, ...] = (),
        stop: Callable[[Any], bool] | None = None, checkpoint_dir: str | None = None,
        resume: bool = False, meta: Mapping[str, Any] | None = None,
        initial_params: Any = None) -> FitResult:
    """Runs ``program`` (:func:`lm_program`) from ``key`` in chunks of ``chunk`` steps, with a
    held-out evaluation after every chunk, a progress bar and, with ``checkpoint_dir``, a
    checkpoint after every chunk (:func:`purejaxpo.checkpoint.run_with_checkpoints`: state,
    metrics so far and ``meta``; ``resume`` continues from the latest one, bitwise as if
    never stopped).

    ``show`` names metrics whose latest chunk mean the progress bar displays. ``stop(params)``,
    if given, is asked after every chunk whether to stop early. Once a step has diverged
    (``nonfinite``), later evaluations are NaN rather than run (the run continues). The
    curve's first point is the starting parameters' score (also on resume:
    ``initial_params``, or those ``program.init`` makes); checkpoints, chunking and the
    progress bar never change the result.
    """
    from tqdm.auto import tqdm

    init = lambda: program.init(key, hyperparams)  # noqa: E731
    if initial_params is None:
        initial_params = jax.jit(lambda: program.init(key, hyperparams).params)()
    curve = [(0, evaluate(initial_params))]
    bar = tqdm(total=program.num_updates, desc=desc, disable=not progress, leave=False)
    diverged = False

    shown: dict[str, str] = {}

    def on_chunk(start, done, metrics):
        nonlocal diverged
        diverged = diverged or bool(np.any(metrics[NONFINITE]))
        bar.update(done - bar.n)
        shown.update({k: f"{float(np.mean(metrics[k])):.3g}" for k in show if k in metrics})

    def on_state(done, state):
        curve.append((done, math.nan if diverged else evaluate(state.params)))
        bar.set_postfix(heldout=f"{curve[-1][1]:.3f}", **shown)
        return not diverged and stop is not None and stop(state.params)

    timings: dict[str, float] = {}
    resumed_from = (checkpoint.latest_step(checkpoint_dir) or 0) if resume and checkpoint_dir \
        else 0
    try:
        state, metrics = checkpoint.run_with_checkpoints(
            init, program.run, program.num_updates, every=chunk, directory=checkpoint_dir,
            resume=resume, meta=meta, on_chunk=on_chunk, on_state=on_state, timings=timings)
    finally:
        bar.close()
    done = int(state.step)
    if curve[-1][0] != done:  # resumed from a checkpoint of the finished run
        curve.append((done, math.nan if diverged else evaluate(state.params)))
    return FitResult(state, metrics, curve, timings.get("run_s", 0.0), resumed_from)
