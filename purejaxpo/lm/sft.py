"""Supervised fine-tuning: teacher forcing on the task's correct answers.

SFT gives RL its starting policy: a short run ("stopped early") yields a policy that is right
some of the time, which GRPO can then improve from its own samples. ``stop_exact_match`` stops
SFT once greedy exact match on a validation set (fixed prompts, distinct from the held-out set
that results are reported on) reaches a level, checked every ``log_every`` steps.
"""

from __future__ import annotations

from typing import Any

import jax

from purejaxpo.lm.tasks.sequence import SequenceTask
from purejaxpo.checkpoint import describe
from purejaxpo.lm.common import (
    FitResult,
    LMState,
    fit,
    lm_program,
    make_evaluator,
    optimizer,
)
from purejaxpo.lm.config import LMSFTConfig
from purejaxpo.lm.model import TransformerConfig, init_params
from purejaxpo.lm.objectives import sft_loss
from purejaxpo.lm.sampling import completion_log_probs
from purejaxpo.update import gradient_step


def make_sft_step(config: LMSFTConfig, model: TransformerConfig, task: SequenceTask):
    """``step(state, hyperparams) -> (state, metrics)``: one batch of fresh prompts with their
    correct answers, one Adam step on the mean token negative log-likelihood."""

    def loss_fn(params, batch):
        # Tokens a tool wrote in a trace are read, never trained on.
        target = batch.answer_mask if batch.answer_observed is None else \
            batch.answer_mask & ~batch.answer_observed
        log_prob = completion_log_probs(params, model, batch.prompts, batch.prompt_valid,
                                        batch.answers, target,
                                        completion_valid=batch.answer_mask)
        loss = sft_loss(log_prob, target)
        return loss, {"loss": loss}

    def step(state: LMState, hyperparams):
        key, batch_key = jax.random.split(state.key)
        batch = task.sample(batch_key, config.batch_size)
        (params, opt_state), metrics = gradient_step(loss_fn, optimizer(hyperparams))(
            (state.params, state.opt_state), batch)
        metrics["tokens"] = batch.answer_mask.sum()
        return state._replace(params=params, opt_state=opt_state, key=key,
                              step=state.step + 1), metrics

    return step


def sft_program(config: LMSFTConfig, model: TransformerConfig, task: SequenceTask, *,
                params: Any = None):
    """SFT as a :class:`~purejaxpo.algos.base.Program`: ``init(key)`` draws the model's
    parameters from the key (or starts from ``params``), so ``jax.jit(jax.vmap(
    program.train))(keys)`` trains one model per key in one program."""

    def start(key):
        init_key, run_key = jax.random.split(key)
        return (init_params(init_key, model) if params is None else params), run_key

    return lm_program(make_sft_step(config, model, task), num_steps=config.steps,
                      hyperparams=config.hyperparams(), start=start)


def train_sft(config: LMSFTConfig, *, params: Any = None, progress: bool = True,
              checkpoint_dir: str | None = None, resume: bool = False,
              checkpoint_every: int | None = None) -> FitResult:
    """Runs SFT from random parameters (or ``params``) from ``PRNGKey(config.seed)``; returns
    a :class:`FitResult`. ``checkpoint_dir`` saves every ``log_every`` steps; ``resume``
    continues from the latest checkpoint there; ``checkpoint_every`` (default ``log_every``)
    steps per chunk: between checkpoints and held-out evaluations."""
    task = config.make_task()
    model = config.model_config()
    stop = None
    if config.stop_exact_match is not None:
        validate = make_evaluator(model, task, config.eval_prompts, validation=True)
        stop = lambda params: validate(params) >= config.stop_exact_match  # noqa: E731
    return fit(sft_program(config, model, task, params=params),
               jax.random.PRNGKey(config.seed),
               evaluate=make_evaluator(model, task, config.eval_prompts),
               chunk=checkpoint_every or config.log_every,
               progress=progress, desc="sft", show=("loss",), stop=stop,
               checkpoint_dir=checkpoint_dir, resume=resume, meta=describe("lm sft", config))
