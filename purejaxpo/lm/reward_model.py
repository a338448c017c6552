"""A Bradley-Terry reward model on preference pairs, usable as a GRPO reward function.

The model is a transformer trunk with a scalar head (:class:`~purejaxpo.lm.model.RewardModel`)
scoring ``[prompt, completion]``; it learns ``P(chosen > rejected) = sigmoid(r_c - r_r)`` with
:func:`purejaxpo.losses.bradley_terry_loss`. :func:`reward_function` turns trained parameters
into a reward function with the task rewards' signature, so
``LMGRPOConfig(rewards=(("rm", 1.0),))`` with ``extra_rewards={"rm": reward_function(params,
model)}`` optimises a policy against it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxpo import losses
from purejaxpo.lm.tasks.sequence import RewardFn
from purejaxpo.checkpoint import describe
from purejaxpo.lm.common import (
    FitResult,
    LMState,
    fit,
    if_finite,
    lm_program,
    optimizer,
)
from purejaxpo.lm.config import LMRewardModelConfig
from purejaxpo.lm.model import RewardModel, TransformerConfig, init_params
from purejaxpo.lm.pairs import Pairs
from purejaxpo.update import gradient_step

Array = jax.Array


def score(params, model: TransformerConfig, prompts: Array, prompt_valid: Array,
          completions: Array, mask: Array) -> Array:
    """Reward-model scores ``[B]`` of completions ``[B, N]`` given prompts ``[B, P]``."""
    tokens = jnp.concatenate([prompts, completions], axis=1)
    valid = jnp.concatenate([prompt_valid, mask], axis=1)
    return RewardModel(model).apply({"params": params}, tokens, valid)


def _pair_scores(params, model, pairs: Pairs) -> tuple[Array, Array]:
    both = score(params, model, *pairs.stacked())
    n = pairs.prompts.shape[0]
    return both[:n], both[n:]


def ranking_accuracy(params, model: TransformerConfig, pairs: Pairs) -> float:
    """Fraction of ``pairs`` whose chosen completion scores above the rejected one (NaN for
    parameters that are not all finite)."""

    def accuracy(params):
        chosen, rejected = _pair_scores(params, model, pairs)
        return if_finite(params, losses.implicit_reward_accuracy(chosen, rejected).mean())

    return float(jax.jit(accuracy)(params))


def make_reward_model_step(config: LMRewardModelConfig, model: TransformerConfig):
    """``step(state, hyperparams, pairs) -> (state, metrics)``: a minibatch of pairs, one
    Adam step on the Bradley-Terry loss."""

    def loss_fn(params, batch):
        chosen, rejected = _pair_scores(params, model, batch)
        loss = losses.bradley_terry_loss(chosen, rejected).mean()
        acc = losses.implicit_reward_accuracy(chosen, rejected).mean()
        return loss, {"loss": loss, "accuracy": acc, "margin": (chosen - rejected).mean()}

    def step(state: LMState, hyperparams, pairs: Pairs):
        key, idx_key = jax.random.split(state.key)
        idx = jax.random.randint(idx_key, (config.batch_size,), 0, pairs.prompts.shape[0])
        batch = jax.tree_util.tree_map(lambda a: a[idx], pairs)
        (params, opt_state), metrics = gradient_step(loss_fn, optimizer(hyperparams))(
            (state.params, state.opt_state), batch)
        return state._replace(params=params, opt_state=opt_state, key=key,
                              step=state.step + 1), metrics

    return step


class RewardModelResult(NamedTuple):
    fit: FitResult  # its curve holds held-out ranking accuracy (not exact match)
    params: Any
    model: TransformerConfig


def train_reward_model(config: LMRewardModelConfig, train_pairs: Pairs, eval_pairs: Pairs, *,
                       init_policy: tuple[Any, TransformerConfig] | None = None,
                       progress: bool = True, checkpoint_dir: str | None = None,
                       resume: bool = False,
                       checkpoint_every: int | None = None) -> RewardModelResult:
    """Trains a reward model from ``PRNGKey(config.seed)``; its trunk starts from
    ``init_policy`` ``(params, model)`` if given (e.g. the SFT policy: it already reads the
    task), else from random weights. ``checkpoint_dir`` / ``resume`` /
    ``checkpoint_every`` as in
    :func:`~purejaxpo.lm.common.fit`."""
    model = init_policy[1] if init_policy is not None else config.model_config()

    def start(key):
        init_key, run_key = jax.random.split(key)
        params = init_params(init_key, model, "reward_model")
        if init_policy is not None:
            params = {**params, "trunk": init_policy[0]}
        return params, run_key

    program = lm_program(make_reward_model_step(config, model), num_steps=config.steps,
                         hyperparams=config.hyperparams(), start=start, consts=(train_pairs,))
    result = fit(program, jax.random.PRNGKey(config.seed),
                 evaluate=lambda p: ranking_accuracy(p, model, eval_pairs),
                 chunk=checkpoint_every or config.log_every, progress=progress,
                 desc="reward model",
                 show=("loss", "accuracy"), checkpoint_dir=checkpoint_dir, resume=resume,
                 meta=describe("lm rm", config))
    return RewardModelResult(result, result.state.params, model)


def reward_function(params, model: TransformerConfig) -> RewardFn:
    """The reward model as a reward function ``(batch, tokens, mask) -> [B]`` (jittable)."""

    def reward(batch, tokens, mask):
        return score(params, model, batch.prompts, batch.prompt_valid, tokens, mask)

    return reward
