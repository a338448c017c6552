"""Configs of the language-model trainers: frozen dataclasses, validated on construction.

One config per trainer, every field flat (so ``--set width=64`` and sweeps name fields
directly):

* :class:`LMTrainConfig`: what every trainer has (task, steps, learning rate, seed,
  evaluation), ``hyperparams()``, ``replace()``, ``to_dict()``, and the loss presets;
* :class:`LMFromScratchConfig` adds the architecture of a transformer trained from scratch:
  :class:`LMSFTConfig` and :class:`LMRewardModelConfig` extend it;
* :class:`LMGRPOConfig` and :class:`LMDPOConfig` train a given policy and extend the base;
  :class:`LMPPOConfig` extends :class:`LMGRPOConfig` (the same sampling, rewards and clipped
  surrogate) with the critic's settings.

Single inheritance only: every config has one parent, and each field is declared once, except
the preference-data fields that :class:`LMDPOConfig` and :class:`LMRewardModelConfig` declare
each with their own defaults (both checked by :func:`check_pair_fields`).

The ``LM`` prefix keeps them apart from the environment algorithms' configs
(:class:`purejaxpo.algos.grpo.GRPOConfig` is GRPO on gymnax environments).

Loss presets: a field whose default is ``None`` is filled from the preset of the config's
``loss`` (:data:`LOSS_PRESETS` for GRPO, the ``beta`` of
:data:`~purejaxpo.lm.preference.PREFERENCE_LOSSES` for DPO) unless the user set it, and
:meth:`LMTrainConfig.replace` fills it again from the new loss's preset:
``LMGRPOConfig().replace(loss="dapo")`` trains DAPO, while a field the user set keeps its value.
Sweeps (which build configs with ``replace``) and ``--set`` follow the same rule.

As in :mod:`purejaxpo.config`, shape- and program-defining settings are static fields, and the
settings listed in ``SWEEPABLE`` come out of ``hyperparams()`` as float32 arrays that the jitted
step takes as an argument (so ``jax.vmap`` can sweep them without recompiling). Every bad value
raises a ``ValueError`` naming the field and its valid range, before anything compiles.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Mapping

import jax.numpy as jnp

from purejaxpo import backends
from purejaxpo.advantages import ADVANTAGE_SCALES
from purejaxpo.backends.cpu import live_tail
from purejaxpo.config import _fail, check_bool, check_float, check_int
from purejaxpo.lm.estimators import ADVANTAGE_ESTIMATORS, AdvantageEstimator
from purejaxpo.lm.model import POSITION_KINDS, TransformerConfig
from purejaxpo.lm.objectives import AGGREGATIONS, RATIO_LEVELS
from purejaxpo.lm.preference import PREFERENCE_LOSSES, PreferenceLoss, describe_preference_losses
from purejaxpo.lm.tasks import make_task
from purejaxpo.lm.tasks.sequence import SequenceTask


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMTrainConfig:
    """Settings every language-model trainer shares.

    Attributes:
      task: ``addition`` or ``sorting``.
      task_args: options of the task as ``(name, value)`` pairs, e.g. ``(("digits", 3),)``.
      steps: optimisation steps (one generated or sampled batch each).
      learning_rate: Adam step size (sweepable).
      max_grad_norm: global gradient-norm clip (sweepable).
      seed: PRNG seed of the run.
      eval_prompts: size of the fixed held-out set for greedy exact match.
      log_every: steps per compiled chunk; progress and held-out evaluation happen between
        chunks.
    """

    task: str = "addition"
    task_args: tuple[tuple[str, Any], ...] = ()
    steps: int = 500
    learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_prompts: int = 512
    log_every: int = 50

    SWEEPABLE: ClassVar[tuple[str, ...]] = ("learning_rate", "max_grad_norm")

    def __post_init__(self):
        if isinstance(self.task_args, dict):
            object.__setattr__(self, "task_args", tuple(sorted(self.task_args.items())))
        object.__setattr__(self, "task_args", tuple(tuple(p) for p in self.task_args))
        # Fill the fields the user left None from the preset, and remember which they were
        # (not a dataclass field: it is not a setting, and equal settings compare equal).
        preset = self.preset()
        filled = tuple(name for name in preset if getattr(self, name) is None)
        for name in filled:
            object.__setattr__(self, name, preset[name])
        object.__setattr__(self, "_from_preset", frozenset(filled))
        self.validate()

    def preset(self) -> Mapping[str, Any]:
        """Values for the fields left ``None``, from this config's ``loss`` (none here);
        ``ValueError`` for an unknown loss."""
        return {}

    @property
    def preset_fields(self) -> frozenset[str]:
        """The fields whose value came from the preset, i.e. that the user did not set."""
        return self._from_preset

    def validate(self) -> None:
        self.make_task()  # raises for an unknown task or option
        check_int("steps", self.steps)
        check_float("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_float("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        check_int("seed", self.seed, low=0)
        check_int("eval_prompts", self.eval_prompts)
        check_int("log_every", self.log_every)

    def make_task(self) -> SequenceTask:
        return make_task(self.task, **dict(self.task_args))

    def hyperparams(self) -> dict[str, Any]:
        return {name: jnp.float32(getattr(self, name)) for name in self.SWEEPABLE}

    def replace(self, **changes):
        """A copy with some fields changed (validated again). Fields that came from the preset
        are filled again from the (possibly new) loss's preset unless ``changes`` sets them;
        setting one to ``None`` hands it back to the preset."""
        unset = {name: None for name in self._from_preset if name not in changes}
        return dataclasses.replace(self, **unset, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["task_args"] = dict(self.task_args)
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMFromScratchConfig(LMTrainConfig):
    """A trainer whose transformer is built from these fields (SFT, the reward model without
    an initial policy); the vocabulary size comes from the task's tokenizer.

    Attributes:
      num_layers, width, num_heads, mlp_ratio, max_len, positions: the transformer
        (:class:`~purejaxpo.lm.model.TransformerConfig`).
    """

    num_layers: int = 2
    width: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    max_len: int = 32
    positions: str = "rope"

    def validate(self) -> None:
        super().validate()
        self.model_config()

    def model_config(self, task: SequenceTask | None = None) -> TransformerConfig:
        """The transformer these fields describe; ``ValueError`` names a bad field."""
        task = task or self.make_task()
        if self.positions not in POSITION_KINDS:
            _fail("positions", self.positions, f"must be one of {POSITION_KINDS}")
        if task.prompt_len + task.answer_len > self.max_len:
            _fail("max_len", self.max_len,
                  f"must be >= prompt + answer length = {task.prompt_len + task.answer_len}")
        return TransformerConfig(  # raises for inconsistent widths/heads
            vocab_size=task.tokenizer.size, num_layers=self.num_layers, width=self.width,
            num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, max_len=self.max_len,
            positions=self.positions)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMSFTConfig(LMFromScratchConfig):
    """Supervised fine-tuning (teacher forcing on the task's correct answers), from scratch.

    Attributes:
      batch_size: prompts (with their answers) per step.
      stop_exact_match: stop early once greedy exact match on the validation prompts reaches
        this (checked every ``log_every`` steps); None trains all ``steps``.
      (and the architecture fields of :class:`LMFromScratchConfig`)
    """

    steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 1e-3
    stop_exact_match: float | None = None

    def validate(self) -> None:
        super().validate()
        check_int("batch_size", self.batch_size)
        if self.stop_exact_match is not None:
            check_float("stop_exact_match", self.stop_exact_match, 0.0, 1.0, low_open=True)


REJECTED_KINDS = ("near_miss", "policy")


def check_pair_fields(config) -> None:
    """Checks the preference-data fields (``batch_size``, ``num_pairs``, ``rejected``,
    ``eval_pairs``) that :class:`LMDPOConfig` and :class:`LMRewardModelConfig` declare."""
    check_int("batch_size", config.batch_size)
    check_int("num_pairs", config.num_pairs)
    if config.rejected not in REJECTED_KINDS:
        _fail("rejected", config.rejected, f"must be one of {REJECTED_KINDS}")
    check_int("eval_pairs", config.eval_pairs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMRewardModelConfig(LMFromScratchConfig):
    """A Bradley-Terry reward model trained on preference pairs.

    With an initial policy the reward model takes that policy's architecture and trunk;
    otherwise the architecture fields of :class:`LMFromScratchConfig` build it.

    Attributes:
      batch_size: pairs per step.
      num_pairs: size of the generated training set (when no pairs file is given).
      rejected: how synthetic rejected answers are made: ``near_miss`` (one answer token
        changed) or ``policy`` (the initial policy's own wrong samples).
      eval_pairs: held-out pairs for ranking accuracy.
    """

    steps: int = 1000
    learning_rate: float = 1e-3
    batch_size: int = 64
    num_pairs: int = 16384
    rejected: str = "near_miss"
    eval_pairs: int = 512

    def validate(self) -> None:
        super().validate()
        check_pair_fields(self)


# What each --loss name sets (fields left None in LMGRPOConfig take these values).
LOSS_PRESETS: dict[str, dict[str, Any]] = {
    # DeepSeekMath: token ratios, std-scaled advantages, sequence-mean of token-means.
    "grpo": dict(ratio_level="token", aggregation="sequence_mean", advantage_scale="std",
                 filter_zero_spread=False, clip_eps=0.2, clip_eps_high=0.2),
    # BNPO / token-level normalisation: every token of the batch weighs the same.
    "bnpo": dict(ratio_level="token", aggregation="token_mean", advantage_scale="std",
                 filter_zero_spread=False, clip_eps=0.2, clip_eps_high=0.2),
    # Dr. GRPO: no std scaling, constant normaliser (no length bias).
    "dr_grpo": dict(ratio_level="token", aggregation="constant", advantage_scale="none",
                    filter_zero_spread=False, clip_eps=0.2, clip_eps_high=0.2),
    # DAPO: clip-higher, token-mean, dynamic sampling (zero-spread groups filtered).
    "dapo": dict(ratio_level="token", aggregation="token_mean", advantage_scale="std",
                 filter_zero_spread=True, clip_eps=0.2, clip_eps_high=0.28),
    # GSPO: sequence-level ratio, whose clip range is two orders of magnitude narrower.
    "gspo": dict(ratio_level="sequence", aggregation="sequence_mean", advantage_scale="std",
                 filter_zero_spread=False, clip_eps=3e-4, clip_eps_high=4e-4),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMGRPOConfig(LMTrainConfig):
    """GRPO and its variants on a sequence policy.

    Fields left ``None`` take the value of the ``loss`` preset (:data:`LOSS_PRESETS`), also
    after ``replace(loss=...)``; set them to mix variants (e.g. ``loss="grpo",
    filter_zero_spread=True``).

    Attributes:
      loss: ``grpo``, ``bnpo``, ``dr_grpo``, ``dapo`` or ``gspo``.
      estimator: the advantage estimator, a key of
        :data:`~purejaxpo.lm.estimators.ADVANTAGE_ESTIMATORS`: ``grpo`` (default), ``rloo`` or
        ``reinforce_pp`` (static).
      kl_coef: REINFORCE++'s coefficient of the per-token k1 KL penalty in the reward
        (sweepable); used by ``estimator="reinforce_pp"`` only, which runs the reference model
        for it whatever ``beta``.
      prompts_per_step: prompts per step ``B`` (static).
      group_size: completions per prompt ``G`` (static).
      max_new_tokens: completion length ``N``; None means the task's answer length.
      num_epochs: optimisation epochs over each generated batch (old log-probs held fixed).
      num_minibatches: minibatches per epoch (must divide ``B * G``).
      clip_eps, clip_eps_high: clip range below / above 1 (sweepable).
      beta: coefficient of the k3 KL to the frozen reference model (sweepable); with
        ``beta == 0`` the reference model is never run (unless the estimator needs it).
      temperature: sampling temperature, also used for the log-probs (sweepable).
      top_k: sample from the ``top_k`` most likely tokens (0: all; static).
      top_p: nucleus sampling threshold (sweepable; 1.0: off).
      ratio_level: ``token`` or ``sequence`` (GSPO).
      aggregation: ``sequence_mean``, ``token_mean`` or ``constant``.
      advantage_scale: ``std`` (GRPO) or ``none`` (Dr. GRPO); only ``estimator="grpo"`` scales.
      filter_zero_spread: drop groups whose rewards are all equal from the loss (DAPO's dynamic
        sampling, without resampling: shapes stay fixed under ``jit``); the count is reported.
        With ``reinforce_pp`` their tokens also leave the batch normalisation.
      rewards: ``(name, weight)`` pairs; names are the task's reward functions (``correct``,
        ``format``, ``digits``) or ones passed to the trainer.
      compact_tail: from the middle of the completions on, decode only the rows still going
        (:class:`~purejaxpo.backends.cpu.Tail`; completions of 8 tokens or more, without
        tools): the same completions for less work when they end early (static). None
        (default): the active backend decides (:mod:`purejaxpo.backends`): on with the CPU
        backend (``cpu.enable()``, the ``purejaxpo lm`` commands on a CPU), whose decoding
        step time grows with its rows (measured there); off otherwise, and on accelerators,
        where it is unmeasured and a small model's decoding step grows little with its rows;
        off in sweeps (vmapped runs would run every branch of its switch).
    """

    loss: str = "grpo"
    estimator: str = "grpo"
    kl_coef: float = 0.001
    steps: int = 2000
    learning_rate: float = 3e-4
    prompts_per_step: int = 16
    group_size: int = 8
    max_new_tokens: int | None = None
    num_epochs: int = 1
    num_minibatches: int = 1
    log_every: int = 100
    clip_eps: float | None = None
    clip_eps_high: float | None = None
    beta: float = 0.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    ratio_level: str | None = None
    aggregation: str | None = None
    advantage_scale: str | None = None
    filter_zero_spread: bool | None = None
    rewards: tuple[tuple[str, float], ...] = (("correct", 1.0), ("digits", 0.5))
    compact_tail: bool | None = None

    SWEEPABLE: ClassVar[tuple[str, ...]] = (
        "learning_rate", "max_grad_norm", "clip_eps", "clip_eps_high", "beta", "temperature",
        "top_p", "kl_coef")

    def preset(self) -> Mapping[str, Any]:
        if self.loss not in LOSS_PRESETS:
            _fail("loss", self.loss, f"must be one of {sorted(LOSS_PRESETS)}")
        return LOSS_PRESETS[self.loss]

    def __post_init__(self):
        if isinstance(self.rewards, dict):
            object.__setattr__(self, "rewards", tuple(self.rewards.items()))
        object.__setattr__(self, "rewards", tuple((str(n), float(w)) for n, w in self.rewards))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        task = self.make_task()
        check_int("prompts_per_step", self.prompts_per_step)
        check_int("group_size", self.group_size)
        if self.estimator not in ADVANTAGE_ESTIMATORS:
            _fail("estimator", self.estimator, f"must be one of {list(ADVANTAGE_ESTIMATORS)}")
        if self.estimator == "rloo" and self.group_size < 2:
            _fail("group_size", self.group_size,
                  "must be >= 2 with estimator='rloo' (the baseline is the mean reward of the "
                  "group's other completions)")
        check_float("kl_coef", self.kl_coef, 0.0)
        if self.max_new_tokens is not None:
            check_int("max_new_tokens", self.max_new_tokens, low=task.answer_len)
        check_int("num_epochs", self.num_epochs)
        check_int("num_minibatches", self.num_minibatches)
        if (self.prompts_per_step * self.group_size) % self.num_minibatches:
            _fail("num_minibatches", self.num_minibatches,
                  f"must divide prompts_per_step * group_size = "
                  f"{self.prompts_per_step * self.group_size}")
        check_float("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True)
        check_float("clip_eps_high", self.clip_eps_high, 0.0, math.inf, low_open=True)
        check_float("beta", self.beta, 0.0)
        check_float("temperature", self.temperature, 0.0, low_open=True)
        check_int("top_k", self.top_k, low=0)
        check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        if self.ratio_level not in RATIO_LEVELS:
            _fail("ratio_level", self.ratio_level, f"must be one of {RATIO_LEVELS}")
        if self.aggregation not in AGGREGATIONS:
            _fail("aggregation", self.aggregation, f"must be one of {AGGREGATIONS}")
        if self.advantage_scale not in ADVANTAGE_SCALES:
            _fail("advantage_scale", self.advantage_scale, f"must be one of {ADVANTAGE_SCALES}")
        check_bool("filter_zero_spread", self.filter_zero_spread)
        if self.compact_tail is not None and not isinstance(self.compact_tail, bool):
            _fail("compact_tail", self.compact_tail,
                  "must be true, false or None (on where JAX runs on the CPU)")
        if not self.rewards:
            _fail("rewards", self.rewards, "needs at least one (name, weight) pair")
        # Names are checked by the trainer, which also knows the user's own reward functions.
        names = [name for name, _ in self.rewards]
        if len(set(names)) != len(names):
            _fail("rewards", names, "names each reward once")
        for name, weight in self.rewards:
            check_float(f"rewards[{name}]", weight, -math.inf)

    @property
    def completion_len(self) -> int:
        return self.max_new_tokens or self.make_task().answer_len

    def decoding_tail(self, batch: int, new_tokens: int):
        """The ``tail`` for :func:`~purejaxpo.lm.sampling.generate` of ``batch`` rows and
        ``new_tokens`` tokens: ``compact_tail`` resolved (None: the active backend's hook)."""
        if self.compact_tail is None:
            return backends.active().decoding_tail(batch, new_tokens)
        return live_tail(batch, new_tokens) if self.compact_tail else None

    @property
    def use_kl(self) -> bool:
        """Whether the loss has the ``beta`` k3 KL term."""
        return self.beta > 0

    @property
    def estimator_spec(self) -> AdvantageEstimator:
        """This config's entry of :data:`~purejaxpo.lm.estimators.ADVANTAGE_ESTIMATORS`."""
        return ADVANTAGE_ESTIMATORS[self.estimator]

    @property
    def use_reference(self) -> bool:
        """Whether the program runs the reference model: for the KL term of the loss or for
        the estimator's per-token KL. False means no reference pass is compiled at all."""
        return self.use_kl or self.estimator_spec.token_kl

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["rewards"] = dict(self.rewards)
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMPPOConfig(LMGRPOConfig):
    """PPO with a value head on a sequence policy (``purejaxpo lm ppo``): InstructGPT-style
    per-token rewards (the KL to the reference folded in per token, the sequence reward on the
    last token), token-level GAE on a critic's values, value clipping, advantages whitened
    over the valid tokens.

    The sampling, reward, ratio, clipping and aggregation fields are GRPO's
    (:class:`LMGRPOConfig`); ``group_size`` is just completions per prompt here (no group
    baseline). Defaults: 32 prompts x 4 completions (as many completions per step as GRPO's
    16 x 8), 2 epochs x 2 minibatches, token-mean aggregation.

    Attributes:
      kl_coef: the per-token k1 KL penalty's coefficient in the reward (sweepable); 0 runs no
        reference model (unless ``beta > 0``).
      gamma: discount over tokens (sweepable; 1: none).
      gae_lambda: GAE's lambda over tokens (sweepable).
      vf_coef: weight of the value loss (sweepable).
      value_clip: the critic's predictions move at most this far from the sampling-time
        values per update (PPO's value clipping; sweepable).
      critic: ``separate``: the critic is a second transformer (trunk and per-position value
        head) whose trunk starts as a copy of the policy's; ``shared``: a value head on the
        policy's own trunk, values and log-probs from one pass (half the forward work, no
        second model in memory; static).
      critic_stop_gradient: with ``critic="shared"``, the value loss trains only the head and
        leaves the policy's trunk to the policy loss (static; with ``False`` the value loss,
        weighted by ``vf_coef``, also shapes the trunk).
      whiten_advantages: normalise advantages to zero mean and unit std over the batch's
        valid tokens (static).
    """

    kl_coef: float = 0.01
    prompts_per_step: int = 32
    group_size: int = 4
    num_epochs: int = 2
    num_minibatches: int = 2
    aggregation: str | None = "token_mean"
    gamma: float = 1.0
    gae_lambda: float = 0.95
    vf_coef: float = 0.5
    value_clip: float = 0.2
    critic: str = "separate"
    critic_stop_gradient: bool = False
    whiten_advantages: bool = True

    SWEEPABLE: ClassVar[tuple[str, ...]] = LMGRPOConfig.SWEEPABLE + (
        "gamma", "gae_lambda", "vf_coef", "value_clip")

    def validate(self) -> None:
        super().validate()
        if self.estimator != "grpo":
            _fail("estimator", self.estimator, "is not used by lm ppo (its advantages are GAE "
                  "on the critic's values); leave it unset")
        if self.filter_zero_spread:
            _fail("filter_zero_spread", self.filter_zero_spread, "must be false for lm ppo "
                  "(the critic learns from every completion, tied groups included)")
        check_float("gamma", self.gamma, 0.0, 1.0)
        check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_float("vf_coef", self.vf_coef, 0.0)
        check_float("value_clip", self.value_clip, 0.0, low_open=True)
        if self.critic not in CRITICS:
            _fail("critic", self.critic, f"must be one of {list(CRITICS)}")
        check_bool("critic_stop_gradient", self.critic_stop_gradient)
        if self.critic_stop_gradient and self.critic != "shared":
            _fail("critic_stop_gradient", self.critic_stop_gradient, "needs critic='shared' "
                  "(a separate critic's gradient never reaches the policy)")
        check_bool("whiten_advantages", self.whiten_advantages)

    @property
    def use_reference(self) -> bool:
        """Whether the program runs the reference model: for the per-token KL in the reward
        (``kl_coef > 0``) or the loss's k3 KL (``beta > 0``)."""
        return self.use_kl or self.kl_coef > 0


CRITICS = ("separate", "shared")
"""Where PPO's critic lives: a separate transformer whose trunk starts from the policy's, or a
value head on the policy's trunk (see :class:`LMPPOConfig`)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMDPOConfig(LMTrainConfig):
    """Preference optimisation (DPO family) on a sequence policy.

    Attributes:
      loss: a key of :data:`~purejaxpo.lm.preference.PREFERENCE_LOSSES` (listed below).
      beta: the loss's coefficient (sweepable); None takes the loss's default
        (:attr:`~purejaxpo.lm.preference.PreferenceLoss.beta`), also after ``replace(loss=...)``.
      label_smoothing: assumed label-flip probability of ``sigmoid`` (conservative DPO),
        ``rpo`` and ``robust`` (sweepable).
      rpo_alpha: weight of ``rpo``'s chosen-answer NLL term (sweepable).
      simpo_gamma: SimPO's target reward margin (sweepable).
      kto_desirable_weight, kto_undesirable_weight: KTO's class weights (sweepable).
      precompute_ref: compute the reference log-probs of the whole dataset once, before
        training (the reference model is then not needed while training).
      batch_size: pairs per step (for ``kto``: unpaired examples).
      num_pairs: size of the generated training set (ignored with a pairs file).
      rejected: how synthetic rejected answers are made: ``policy`` (the initial policy's own
        wrong samples; better negatives than random near misses, measured: exact match rises
        more) or ``near_miss`` (one answer token changed).
      eval_pairs: held-out pairs for preference (ranking) accuracy.

    Losses (name, default beta, what it is, when to use it):

{losses}
    """

    loss: str = "rpo"
    steps: int = 1000
    learning_rate: float = 1e-4
    batch_size: int = 64
    num_pairs: int = 16384
    rejected: str = "policy"
    eval_pairs: int = 512
    beta: float | None = None
    label_smoothing: float = 0.0
    rpo_alpha: float = 1.0
    simpo_gamma: float = 0.5
    kto_desirable_weight: float = 1.0
    kto_undesirable_weight: float = 1.0
    precompute_ref: bool = True

    SWEEPABLE: ClassVar[tuple[str, ...]] = (
        "learning_rate", "max_grad_norm", "beta", "label_smoothing", "rpo_alpha", "simpo_gamma",
        "kto_desirable_weight", "kto_undesirable_weight")

    def preset(self) -> Mapping[str, Any]:
        if self.loss not in PREFERENCE_LOSSES:
            _fail("loss", self.loss, f"must be one of {list(PREFERENCE_LOSSES)}")
        return {"beta": PREFERENCE_LOSSES[self.loss].beta}

    @property
    def loss_spec(self) -> PreferenceLoss:
        """This config's entry of :data:`~purejaxpo.lm.preference.PREFERENCE_LOSSES`."""
        return PREFERENCE_LOSSES[self.loss]

    def validate(self) -> None:
        super().validate()
        check_float("beta", self.beta, 0.0, low_open=True)
        high = 0.5
        check_float("label_smoothing", self.label_smoothing, 0.0, high, high_open=True)
        check_float("rpo_alpha", self.rpo_alpha, 0.0)
        check_float("simpo_gamma", self.simpo_gamma, -math.inf)
        check_float("kto_desirable_weight", self.kto_desirable_weight, 0.0)
        check_float("kto_undesirable_weight", self.kto_undesirable_weight, 0.0)
        check_bool("precompute_ref", self.precompute_ref)
        check_pair_fields(self)


if LMDPOConfig.__doc__:  # None under python -OO
    LMDPOConfig.__doc__ = LMDPOConfig.__doc__.format(losses=describe_preference_losses(" " * 6))


LM_TRAINERS: dict[str, type[LMTrainConfig]] = {
    "lm-sft": LMSFTConfig,
    "lm-grpo": LMGRPOConfig,
    "lm-ppo": LMPPOConfig,
    "lm-dpo": LMDPOConfig,
}
"""The language-model trainers that :mod:`purejaxpo.sweep` runs (``purejaxpo sweep lm-grpo
...``), by name; their score is held-out greedy exact match at the end of each run."""
