"""The advantage estimators of the GRPO trainer, as a table (``LMGRPOConfig.estimator``).

Each entry turns one step's weighted rewards ``[B, G]`` (B prompts x G completions) into the
advantages :func:`~purejaxpo.lm.objectives.grpo_loss` takes: ``[B * G]`` per completion (GRPO's
group baseline, RLOO) or ``[B * G, N]`` per token (REINFORCE++). The math is in
:mod:`purejaxpo.advantages`; when to use which: :mod:`purejaxpo.lm.grpo`. Adding an estimator
is adding an entry to :data:`ADVANTAGE_ESTIMATORS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from purejaxpo.advantages import group_advantages, reinforce_pp_advantages, rloo_advantages


@dataclasses.dataclass(frozen=True)
class AdvantageEstimator:
    """One advantage estimator of the GRPO trainer (``LMGRPOConfig.estimator``).

    Attributes:
      fn: ``fn(rewards, token_kl, mask, kl_coef, *, scale) -> advantages`` with the weighted
        rewards ``[B, G]`` (B prompts x G completions), the k1 KL of the sampling policy to the
        reference per token ``[B * G, N]`` (None unless ``token_kl``), the completion mask
        ``[B * G, N]`` (filtered groups removed), the traced ``kl_coef`` and
        ``LMGRPOConfig.advantage_scale``; returns ``[B * G]`` (per completion) or ``[B * G, N]``
        (per token) advantages for :func:`~purejaxpo.lm.objectives.grpo_loss`.
      token_kl: whether it needs the per-token KL, i.e. the reference model runs even with
        ``beta == 0``.
      description: one line, for the docs and ``--help``.
    """

    fn: Callable[..., Any]
    token_kl: bool
    description: str


def _grpo_advantages(rewards, token_kl, mask, kl_coef, *, scale):
    return group_advantages(rewards, scale=scale).reshape(-1)


def _rloo_advantages(rewards, token_kl, mask, kl_coef, *, scale):
    return rloo_advantages(rewards).reshape(-1)


def _reinforce_pp_advantages(rewards, token_kl, mask, kl_coef, *, scale):
    return reinforce_pp_advantages(rewards.reshape(-1), token_kl, mask, kl_coef)


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "grpo": AdvantageEstimator(
        _grpo_advantages, token_kl=False,
        description="group mean baseline, divided by the group std unless "
                    "advantage_scale=none (Dr. GRPO)"),
    "rloo": AdvantageEstimator(
        _rloo_advantages, token_kl=False,
        description="leave-one-out baseline: the mean reward of the group's other completions "
                    "(needs group_size >= 2)"),
    "reinforce_pp": AdvantageEstimator(
        _reinforce_pp_advantages, token_kl=True,
        description="REINFORCE++: reward minus kl_coef * k1 KL per token, return-to-go, "
                    "normalised over the batch's tokens (runs the reference model)"),
}
"""Every advantage estimator by its ``LMGRPOConfig.estimator`` name (``purejaxpo lm grpo
--estimator``); the trainer reads only this table. Which to use: see :mod:`purejaxpo.lm.grpo`."""
