"""GRPO and its variants (Dr. GRPO, BNPO, DAPO, GSPO) on a sequence policy.

One training step is one pure function, compiled once:

1. sample ``B`` prompts and ``G`` completions each (KV-cached sampling, in ``jit``);
2. score them with the weighted reward functions (JAX, in ``jit``);
3. optionally drop groups whose rewards do not differ (DAPO's dynamic sampling);
4. old log-probs (held fixed over the epochs) and, when ``beta > 0`` or the estimator needs a
   per-token KL, the frozen reference model's log-probs;
5. advantages by ``config.estimator`` (the table
   :data:`~purejaxpo.lm.estimators.ADVANTAGE_ESTIMATORS`);
6. ``num_epochs`` x ``num_minibatches`` Adam steps on :func:`purejaxpo.lm.objectives.grpo_loss`
   (the shared :func:`purejaxpo.update.run_epochs` loop).

Shapes: ``B`` prompts, ``G`` group size, ``N`` completion tokens; completions are ``[B * G, N]``
with each prompt's group contiguous.

Which advantage estimator (``--estimator``):

* ``grpo`` (default; :func:`~purejaxpo.advantages.group_advantages`): each completion against
  its group's mean, divided by the group's std. The std scaling up-weights prompts whose
  rewards barely differ (very easy or very hard ones), and the own-sample baseline biases the
  gradient slightly; ``advantage_scale="none"`` (Dr. GRPO) removes the scaling.
* ``rloo`` (:func:`~purejaxpo.advantages.rloo_advantages`): each completion against the mean
  of the *other* ``G - 1`` of its group, no scaling: an unbiased policy gradient with a
  baseline as good as GRPO's (it is Dr. GRPO's advantage times ``G / (G - 1)``). Prefer it
  with small groups, or with rewards on a meaningful scale that std scaling would distort;
  it needs ``G >= 2``.
* ``reinforce_pp`` (:func:`~purejaxpo.advantages.reinforce_pp_advantages`): no group
  baseline; the KL to the reference is folded into a per-token reward (``kl_coef``), returns
  are summed to go, and all valid tokens of the batch are normalised together. Per-token
  advantages with a global baseline: more stable when groups are small or ``G = 1``, and a
  KL penalty that shapes each token rather than a loss term; the price is a reference-model
  pass every step even with ``beta = 0`` (usually keep ``beta = 0`` with it).

Tied groups give exactly zero advantage under ``grpo`` and ``rloo``; under ``reinforce_pp``
only when every valid token's return is equal (with the KL in the reward they usually differ).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from purejaxpo.lm.tasks.sequence import RewardFn, SequenceTask
from purejaxpo.checkpoint import describe
from purejaxpo.lm.common import (
    FitResult,
    LMState,
    fit,
    lm_program,
    make_evaluator,
    optimizer,
    reference_of,
)
from purejaxpo.lm.config import LMGRPOConfig
from purejaxpo.lm.model import TransformerConfig
from purejaxpo.lm.objectives import grpo_loss
from purejaxpo.lm.sampling import completion_log_probs, generate
from purejaxpo.losses import masked_mean
from purejaxpo.update import gradient_step, run_epochs


def resolve_rewards(config: LMGRPOConfig, task: SequenceTask,
                    extra_rewards: Mapping[str, RewardFn] | None = None
                    ) -> list[tuple[str, RewardFn, float]]:
    """``(name, function, weight)`` for each of ``config.rewards``; ``ValueError`` for an
    unknown name (listing the task's rewards and the user's)."""
    available = {**task.reward_functions(), **(extra_rewards or {})}
    out = []
    for name, weight in config.rewards:
        if name not in available:
            raise ValueError(f"rewards={name!r} is invalid: unknown reward; known: "
                             f"{sorted(available)}")
        out.append((name, available[name], weight))
    return out


class Scored(NamedTuple):
    """One step's sampled completions and their rewards (:func:`make_sampler`).

    ``batch``: the prompts, each repeated ``G`` times (``[B * G, P]``); ``completions``:
    ``[B * G, N]`` tokens and mask; ``rewards``: ``[B * G]`` weighted sum of the reward
    functions; ``exact``: ``[B * G]`` exact match; ``metrics``: the mean of each reward
    function (``reward/<name>``)."""

    batch: Any
    completions: Any
    rewards: jax.Array
    exact: jax.Array
    metrics: dict


def make_sampler(config, model: TransformerConfig, task: SequenceTask,
                 extra_rewards: Mapping[str, RewardFn] | None = None):
    """``sample(params, prompt_key, sample_key, hyperparams) -> Scored``: ``prompts_per_step``
    prompts,
    ``group_size`` completions each (KV-cached sampling with the config's temperature, top-k,
    top-p), scored by the weighted reward functions: the first half of every RL step on a
    sequence policy (GRPO's and PPO's). ``ValueError`` for an unknown reward or a completion
    that does not fit the model."""
    rewards = resolve_rewards(config, task, extra_rewards)
    tok = task.tokenizer
    num_prompts, group = config.prompts_per_step, config.group_size
    num_new = config.completion_len
    tail = (config.decoding_tail(num_prompts * group, num_new)
            if task.tool_use is None else None)
    if task.prompt_len + num_new > model.max_len:
        raise ValueError(
            f"max_new_tokens={num_new} is invalid: prompt ({task.prompt_len}) + completion must "
            f"fit the model's max_len {model.max_len}")

    def sample(params, prompt_key, sample_key, hp) -> Scored:
        batch = task.sample(prompt_key, num_prompts).repeat(group)
        completions = generate(
            sample_key, params, model, batch.prompts, batch.prompt_valid,
            max_new_tokens=num_new, eos_id=tok.eos_id, pad_id=tok.pad_id,
            temperature=hp["temperature"], top_k=config.top_k, top_p=hp["top_p"],
            tools=task.tool_use, prompt_group=group,  # batch: each prompt `group` times
            tail=tail)
        metrics = {}
        total = jnp.zeros((num_prompts * group,), jnp.float32)
        exact = None
        for name, fn, weight in rewards:
            value = fn(batch, completions.tokens, completions.mask).astype(jnp.float32)
            if fn == task.exact_match:  # the exact-match metric is this reward
                exact = value
            metrics[f"reward/{name}"] = value.mean()
            total = total + weight * value
        if exact is None:
            exact = task.exact_match(batch, completions.tokens, completions.mask)
        if completions.calls is not None:
            metrics.update(tool_metrics(completions, exact))
        return Scored(batch, completions, total, exact, metrics)

    return sample


def tool_metrics(completions, exact) -> dict[str, jax.Array]:
    """Per-step tool statistics: ``tool/calls`` per completion, ``tool/malformed_rate`` (of
    the calls made), ``tool/used`` (fraction of completions that call), and exact match among
    completions with and without a call (``tool/exact_with``, ``tool/exact_without``; 0 when
    there are none)."""
    calls = completions.calls.astype(jnp.float32)
    used = calls > 0
    n_used = jnp.sum(used)
    return {
        "tool/calls": calls.mean(),
        "tool/malformed_rate": jnp.sum(completions.malformed) / jnp.maximum(jnp.sum(calls), 1),
        "tool/used": used.mean(),
        "tool/exact_with": jnp.sum(exact * used) / jnp.maximum(n_used, 1),
        "tool/exact_without": jnp.sum(exact * ~used) / jnp.maximum(used.size - n_used, 1),
    }


def make_grpo_step(config: LMGRPOConfig, model: TransformerConfig, task: SequenceTask,
                   extra_rewards: Mapping[str, RewardFn] | None = None):
    """``step(state, hyperparams, ref_params) -> (state, metrics)``, pure and jittable.

    ``ref_params`` are the frozen reference model's parameters (ignored, and never run, unless
    ``config.use_reference``: ``beta > 0`` or ``estimator="reinforce_pp"``; pass ``None``
    then). ``hyperparams`` is ``config.hyperparams()`` or a batch of them under ``vmap``.
    """
    sample = make_sampler(config, model, task, extra_rewards)
    num_prompts, group = config.prompts_per_step, config.group_size
    need_old = config.num_epochs > 1 or config.num_minibatches > 1
    estimator = config.estimator_spec

    # With one minibatch, the update sees whole groups (shuffled as groups), so every pass
    # over the batch runs each prompt once per group (completion_log_probs' prompt_group).
    whole_groups = config.num_minibatches == 1
    prompt_group = group if whole_groups else 1

    def log_probs(params, data, temperature, with_entropy=False):
        return completion_log_probs(params, model, data["prompts"], data["prompt_valid"],
                                    data["tokens"], data["mask"], temperature,
                                    with_entropy=with_entropy, completion_valid=data["valid"],
                                    prompt_group=prompt_group)

    def step(state: LMState, hyperparams, ref_params=None):
        if config.use_reference and ref_params is None:
            raise ValueError(
                f"ref_params=None is invalid with beta={config.beta}, "
                f"estimator={config.estimator!r}: the reference model's parameters are needed")
        hp = hyperparams
        key, prompt_key, sample_key, shuffle_key = jax.random.split(state.key, 4)
        scored = sample(state.params, prompt_key, sample_key, hp)
        batch, completions, total, exact = (scored.batch, scored.completions, scored.rewards,
                                            scored.exact)
        metrics = dict(scored.metrics)
        grouped = total.reshape(num_prompts, group)
        zero_spread = jnp.max(grouped, axis=1) == jnp.min(grouped, axis=1)  # [B]
        keep = ~zero_spread if config.filter_zero_spread else jnp.ones_like(zero_spread)
        # The tokens that count: the policy's own (tool results are read, never scored).
        mask = completions.actions & jnp.repeat(keep, group)[:, None]

        data = {"prompts": batch.prompts, "prompt_valid": batch.prompt_valid,
                "tokens": completions.tokens, "mask": mask, "valid": completions.mask}
        sampling_log_prob = ref_log_prob = token_kl = None
        if need_old or estimator.token_kl:
            sampling_log_prob = jax.lax.stop_gradient(
                log_probs(state.params, data, hp["temperature"]))
        if need_old:
            data["old_log_prob"] = sampling_log_prob
        if config.use_reference:
            ref_log_prob = jax.lax.stop_gradient(log_probs(ref_params, data, hp["temperature"]))
        if config.use_kl:
            data["ref_log_prob"] = ref_log_prob
        if estimator.token_kl:
            # k1 estimate of KL(pi_old || pi_ref) at each sampled token that counts.
            token_kl = jnp.where(mask, sampling_log_prob - ref_log_prob, 0.0)
            metrics["token_kl"] = masked_mean(token_kl, mask)
        data["advantages"] = estimator.fn(grouped, token_kl, mask, hp["kl_coef"],
                                          scale=config.advantage_scale)

        def loss_fn(params, mb):
            if whole_groups:  # [prompts, G, ...] -> [prompts * G, ...], each group in a row
                mb = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), mb)
            log_prob, entropy = log_probs(params, mb, hp["temperature"], with_entropy=True)
            # One epoch of one minibatch: the sampling policy is the current one.
            old = mb["old_log_prob"] if need_old else jax.lax.stop_gradient(log_prob)
            loss, aux = grpo_loss(
                log_prob, old, mb["advantages"], mb["mask"], clip_low=hp["clip_eps"],
                clip_high=hp["clip_eps_high"], ref_log_prob=mb.get("ref_log_prob"),
                beta=hp["beta"], ratio_level=config.ratio_level, aggregation=config.aggregation)
            aux["entropy"] = masked_mean(entropy, mb["mask"])
            aux["loss"] = loss
            return loss, aux

        if whole_groups:
            data = jax.tree_util.tree_map(
                lambda x: x.reshape(num_prompts, group, *x.shape[1:]), data)
        (params, opt_state), aux = run_epochs(
            shuffle_key, (state.params, state.opt_state), data,
            gradient_step(loss_fn, optimizer(hp)), num_epochs=config.num_epochs,
            num_minibatches=config.num_minibatches)
        if config.filter_zero_spread:
            # Every group filtered out: no gradient at all, so leave the policy (and Adam's
            # moments) untouched rather than let momentum move it.
            any_kept = jnp.any(keep)
            params, opt_state = jax.tree_util.tree_map(
                lambda new, old: jnp.where(any_kept, new, old),
                (params, opt_state), (state.params, state.opt_state))

        metrics.update({k: v.mean() for k, v in aux.items()})
        metrics["reward"] = total.mean()
        metrics["exact_match"] = exact.mean()
        metrics["zero_spread_fraction"] = zero_spread.mean()
        metrics["completion_length"] = completions.mask.sum(axis=1).mean()
        metrics["completion_tokens"] = completions.mask.sum()
        if not config.use_kl:
            metrics["kl"] = jnp.zeros(())
        return state._replace(params=params, opt_state=opt_state, key=key,
                              step=state.step + 1), metrics

    return step


def grpo_program(config: LMGRPOConfig, params: Any, model: TransformerConfig,
                 task: SequenceTask, *, ref_params: Any = None,
                 extra_rewards: Mapping[str, RewardFn] | None = None):
    """GRPO from ``params`` as a :class:`~purejaxpo.algos.base.Program`; the reference model
    (where the config uses one) is ``params`` unless ``ref_params`` is given, kept in the
    state (so checkpoints hold it), or, for a policy with LoRA adapters, the adapters switched
    off in each step (:func:`~purejaxpo.lm.common.reference_of`: no copy)."""
    reference = None
    if config.use_reference:
        reference = reference_of(params) if ref_params is None else (lambda p: ref_params)
    return lm_program(make_grpo_step(config, model, task, extra_rewards),
                      num_steps=config.steps, hyperparams=config.hyperparams(),
                      start=lambda key: (params, key), reference=reference)


def train_grpo(config: LMGRPOConfig, params: Any, model: TransformerConfig, *,
               ref_params: Any = None, extra_rewards: Mapping[str, RewardFn] | None = None,
               progress: bool = True, checkpoint_dir: str | None = None,
               resume: bool = False, checkpoint_every: int | None = None) -> FitResult:
    """Runs GRPO from ``params`` (e.g. an SFT checkpoint) from ``PRNGKey(config.seed)``; the
    reference model is ``params`` itself unless ``ref_params`` is given. ``checkpoint_dir``
    saves every ``log_every`` steps; ``resume`` continues from the latest checkpoint there.
    Returns a :class:`~purejaxpo.lm.common.FitResult`."""
    task = config.make_task()
    program = grpo_program(config, params, model, task, ref_params=ref_params,
                           extra_rewards=extra_rewards)
    return fit(program, jax.random.PRNGKey(config.seed),
               evaluate=make_evaluator(model, task, config.eval_prompts),
               chunk=checkpoint_every or config.log_every,
               progress=progress, desc=f"{config.loss}", show=("reward", "exact_match"),
               checkpoint_dir=checkpoint_dir, resume=resume, initial_params=params,
               meta=describe("lm grpo", config))
