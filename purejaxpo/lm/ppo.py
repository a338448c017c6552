"""PPO with a value head on a sequence policy (InstructGPT-style RLHF, or a verifiable reward).

One training step is one pure function, compiled once:

1. sample ``B`` prompts and ``G`` completions each and score them (:func:`~purejaxpo.lm.grpo.
   make_sampler`, shared with GRPO);
2. the sampling policy's log-probs, the reference model's (where ``kl_coef > 0`` or
   ``beta > 0``) and the critic's values ``V`` before each completion token;
3. per-token rewards: ``-kl_coef * (log pi_old - log pi_ref)`` at every token and the sequence
   reward on the last one; token-level GAE over the completion
   (:func:`purejaxpo.advantages.token_gae`, which runs :func:`purejaxpo.advantages.gae`);
   advantages whitened over the valid tokens;
4. ``num_epochs`` x ``num_minibatches`` Adam steps on the clipped surrogate
   (:func:`~purejaxpo.lm.objectives.grpo_loss` with per-token advantages) plus ``vf_coef``
   times the clipped value loss (:func:`purejaxpo.losses.value_loss`), through the shared
   :func:`purejaxpo.update.run_epochs` loop.

The trained parameters are ``{"policy": ..., "critic": ...}``; one Adam state covers both. With
``critic="separate"`` (the default) the critic is a :class:`~purejaxpo.lm.model.ValueModel`
whose trunk starts as a copy of the policy's (it already reads the task), with its own
per-position value head. With ``critic="shared"`` it is only a value head (``{"value": ...}``)
on the policy's final hidden states: one pass gives log-probs and values, and
``critic_stop_gradient`` keeps the value loss out of the policy's trunk.

Shapes: ``B * G`` completions of ``N`` tokens after prompts of ``P``; values ``[B * G, N]``
(position ``t`` is ``V`` of the prefix that predicts completion token ``t``).

When to use it rather than GRPO: PPO's critic gives per-token credit and needs no group of
completions per prompt (``group_size=1`` works), at the price of a second network to train and
run. GRPO (or RLOO) needs no critic and is the simpler default for verifiable rewards with
groups.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from purejaxpo import advantages, losses
from purejaxpo.checkpoint import describe
from purejaxpo.lm.tasks.sequence import RewardFn, SequenceTask
from purejaxpo.lm.common import (
    FitResult, LMState, fit, lm_program, make_evaluator, optimizer, reference_of)
from purejaxpo.lm.config import LMPPOConfig
from purejaxpo.lm.grpo import make_sampler
from purejaxpo.lm.model import Transformer, TransformerConfig, ValueModel, init_params
from purejaxpo.lm.objectives import grpo_loss
from purejaxpo.lm.sampling import completion_log_probs, log_probs_from_logits
from purejaxpo.losses import masked_mean
from purejaxpo.update import gradient_step, run_epochs


def completion_values(critic_params, model: TransformerConfig, prompts, prompt_valid,
                      completions, mask, completion_valid=None):
    """The critic's ``V`` before each completion token ``[B, N]`` (0 where ``mask`` is false):
    one pass over ``[prompt, completion]`` (attending to ``completion_valid``, default the
    mask), read at the positions whose logits predict the completion."""
    tokens = jnp.concatenate([prompts, completions], axis=1)
    valid = jnp.concatenate([prompt_valid, mask if completion_valid is None
                             else completion_valid], axis=1)
    values = ValueModel(model).apply({"params": critic_params}, tokens, valid)
    p = prompts.shape[1]
    return jnp.where(mask, values[:, p - 1:-1], 0.0)


def _value_head() -> nn.Dense:
    """The value head: one linear unit on a final hidden state (as :class:`ValueModel`'s)."""
    return nn.Dense(1, kernel_init=nn.initializers.normal(0.02), name="value")


def init_critic(key, policy_params, model: TransformerConfig, critic: str = "separate"):
    """The critic's parameters: for ``separate``, a :class:`~purejaxpo.lm.model.ValueModel`'s
    (the policy's trunk copied, a fresh head); for ``shared``, the head alone
    (``{"value": ...}``), read on the policy's trunk."""
    if critic == "shared":
        head = _value_head().init(key, jnp.zeros((1, model.width)))["params"]
        return {"value": head}
    return {**init_params(key, model, "value"), "trunk": policy_params}


def policy_and_values(params, model: TransformerConfig, critic: str, data, temperature, *,
                      with_entropy: bool = False, stop_gradient: bool = False):
    """``(log_probs, values)`` (``log_probs`` as :func:`completion_log_probs` returns it, with
    entropies if asked) of the completions in ``data`` (``prompts``, ``prompt_valid``,
    ``tokens``, ``mask``) under ``params = {"policy", "critic"}``: two passes with a
    ``separate`` critic, one with a ``shared`` one (``stop_gradient``: the head reads the
    trunk's hidden states through :func:`jax.lax.stop_gradient`). Values ``[B, N]``, 0 where
    ``mask`` is false; the passes attend to ``data["valid"]`` (tool results too)."""
    prompts, prompt_valid, tokens, mask = (data["prompts"], data["prompt_valid"],
                                           data["tokens"], data["mask"])
    attend = data.get("valid", mask)
    if critic == "separate":
        log_probs = completion_log_probs(params["policy"], model, prompts, prompt_valid, tokens,
                                         mask, temperature, with_entropy=with_entropy,
                                         completion_valid=attend)
        return log_probs, completion_values(params["critic"], model, prompts, prompt_valid,
                                            tokens, mask, attend)
    full = jnp.concatenate([prompts, tokens], axis=1)
    valid = jnp.concatenate([prompt_valid, attend], axis=1)
    (logits, hidden), _ = Transformer(model).apply({"params": params["policy"]}, full, valid,
                                                   also_hidden=True)
    p = prompts.shape[1]
    log_probs = log_probs_from_logits(logits[:, p - 1:-1], tokens, mask, temperature,
                                      with_entropy=with_entropy)
    hidden = hidden[:, p - 1:-1]
    if stop_gradient:
        hidden = jax.lax.stop_gradient(hidden)
    values = _value_head().apply({"params": params["critic"]["value"]}, hidden)[..., 0]
    return log_probs, jnp.where(mask, values, 0.0)


def make_ppo_step(config: LMPPOConfig, model: TransformerConfig, task: SequenceTask,
                  extra_rewards: Mapping[str, RewardFn] | None = None):
    """``step(state, hyperparams, ref_params) -> (state, metrics)``, pure and jittable;
    ``state.params`` is ``{"policy": ..., "critic": ...}``, ``ref_params`` the reference
    policy's parameters (None unless ``config.use_reference``)."""
    sample = make_sampler(config, model, task, extra_rewards)

    def log_probs(params, data, temperature):
        return completion_log_probs(params, model, data["prompts"], data["prompt_valid"],
                                    data["tokens"], data["mask"], temperature,
                                    completion_valid=data["valid"])

    def both(params, data, temperature, with_entropy=False):
        return policy_and_values(params, model, config.critic, data, temperature,
                                 with_entropy=with_entropy,
                                 stop_gradient=config.critic_stop_gradient)

    def step(state: LMState, hyperparams, ref_params=None):
        if config.use_reference and ref_params is None:
            raise ValueError(f"ref_params=None is invalid with kl_coef={config.kl_coef}, "
                             f"beta={config.beta}: the reference model's parameters are needed")
        hp = hyperparams
        key, prompt_key, sample_key, shuffle_key = jax.random.split(state.key, 4)
        scored = sample(state.params["policy"], prompt_key, sample_key, hp)
        mask = scored.completions.actions  # tool results are read, never scored
        data = {"prompts": scored.batch.prompts, "prompt_valid": scored.batch.prompt_valid,
                "tokens": scored.completions.tokens, "mask": mask,
                "valid": scored.completions.mask}
        old, values = jax.lax.stop_gradient(both(state.params, data, hp["temperature"]))
        metrics = dict(scored.metrics)
        token_kl = jnp.zeros_like(old)
        if config.use_reference:
            ref = jax.lax.stop_gradient(log_probs(ref_params, data, hp["temperature"]))
            token_kl = jnp.where(mask, old - ref, 0.0)
            if config.use_kl:
                data["ref_log_prob"] = ref
        adv, targets = advantages.token_gae(scored.rewards, token_kl, values, mask,
                                            hp["kl_coef"], hp["gamma"], hp["gae_lambda"])
        if config.whiten_advantages:
            adv = advantages.normalize(adv, mask)
        data.update(old_log_prob=old, old_values=values, advantages=adv, targets=targets)

        def loss_fn(params, mb):
            (log_prob, entropy), v = both(params, mb, hp["temperature"], with_entropy=True)
            pg, aux = grpo_loss(
                log_prob, mb["old_log_prob"], mb["advantages"], mb["mask"],
                clip_low=hp["clip_eps"], clip_high=hp["clip_eps_high"],
                ref_log_prob=mb.get("ref_log_prob"), beta=hp["beta"],
                ratio_level=config.ratio_level, aggregation=config.aggregation)
            v_loss = masked_mean(losses.value_loss(v, mb["targets"], mb["old_values"],
                                                   hp["value_clip"]), mb["mask"])
            loss = pg + hp["vf_coef"] * v_loss
            aux.update(entropy=masked_mean(entropy, mb["mask"]), policy_loss=pg,
                       value_loss=v_loss, loss=loss)
            return loss, aux

        (params, opt_state), aux = run_epochs(
            shuffle_key, (state.params, state.opt_state), data,
            gradient_step(loss_fn, optimizer(hp)), num_epochs=config.num_epochs,
            num_minibatches=config.num_minibatches)
        metrics.update({k: v.mean() for k, v in aux.items()})
        metrics.update(
            reward=scored.rewards.mean(), exact_match=scored.exact.mean(),
            token_kl=masked_mean(token_kl, mask), value=masked_mean(values, mask),
            completion_length=scored.completions.mask.sum(axis=1).mean(),
            completion_tokens=scored.completions.mask.sum())
        # Explained variance of the sampling-time values against their targets.
        var_t = masked_mean(jnp.square(targets - masked_mean(targets, mask)), mask)
        resid = targets - values
        var_r = masked_mean(jnp.square(resid - masked_mean(resid, mask)), mask)
        metrics["explained_variance"] = 1.0 - var_r / jnp.maximum(var_t, 1e-8)
        return state._replace(params=params, opt_state=opt_state, key=key,
                              step=state.step + 1), metrics

    return step


def ppo_program(config: LMPPOConfig, params: Any, model: TransformerConfig, task: SequenceTask,
                *, extra_rewards: Mapping[str, RewardFn] | None = None):
    """PPO from policy ``params`` as a :class:`~purejaxpo.algos.base.Program`: ``init(key)``
    builds the critic (the policy's trunk, a value head drawn from the key); the reference
    model, where used, is the starting policy, kept in the state (free under LoRA:
    :func:`~purejaxpo.lm.common.reference_of`)."""

    def start(key):
        critic_key, run_key = jax.random.split(key)
        critic = init_critic(critic_key, params, model, config.critic)
        return {"policy": params, "critic": critic}, run_key

    return lm_program(make_ppo_step(config, model, task, extra_rewards),
                      num_steps=config.steps, hyperparams=config.hyperparams(), start=start,
                      reference=reference_of(params, lambda p: p["policy"])
                      if config.use_reference else None)


def train_ppo(config: LMPPOConfig, params: Any, model: TransformerConfig, *,
              extra_rewards: Mapping[str, RewardFn] | None = None, progress: bool = True,
              checkpoint_dir: str | None = None, resume: bool = False,
              checkpoint_every: int | None = None) -> FitResult:
    """Runs PPO from policy ``params`` from ``PRNGKey(config.seed)``. The result's
    ``state.params`` is ``{"policy", "critic"}``; its curve is the policy's held-out greedy
    exact match. ``checkpoint_dir`` / ``resume`` / ``checkpoint_every`` as in
    :func:`~purejaxpo.lm.common.fit`."""
    task = config.make_task()
    evaluate = make_evaluator(model, task, config.eval_prompts)
    return fit(ppo_program(config, params, model, task, extra_rewards=extra_rewards),
               jax.random.PRNGKey(config.seed), evaluate=lambda p: evaluate(p["policy"]),
               chunk=checkpoint_every or config.log_every, progress=progress, desc="ppo",
               show=("reward", "exact_match", "value_loss"), checkpoint_dir=checkpoint_dir,
               resume=resume, initial_params={"policy": params}, meta=describe("lm ppo", config))
