"""The DPO family's losses, as a table (``LMDPOConfig.loss``): which function of
:mod:`purejaxpo.losses` each name calls, what it needs (a reference model, the chosen answers'
NLL, pairs or unpaired labels), its default ``beta`` and when to use it.

The DPO trainer (:mod:`purejaxpo.lm.dpo`) and the config read only this table; adding a loss is
adding an entry to :data:`PREFERENCE_LOSSES` (plus its function in :mod:`purejaxpo.losses`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from purejaxpo import losses


@dataclasses.dataclass(frozen=True)
class PreferenceLoss:
    """One loss of the DPO family: the function the trainer calls and what it needs.

    Attributes:
      fn: the per-example loss from :mod:`purejaxpo.losses`. A paired loss is called as
        ``fn(chosen, rejected, *coefficients)`` with summed log-ratios to the reference model
        (``reference``) or length-normalised log-probs (reference-free), or with ``nll`` as
        ``fn(chosen, rejected, chosen_nll, *coefficients)``; the unpaired one as
        ``fn(logratio, desirable, reference_point, *coefficients)``.
      reference: whether it needs the reference model.
      nll: whether it also takes the chosen completions' negative log-likelihood per token
        (TRL's normalisation: the batch mean of it is the mean over all chosen tokens).
      paired: False for a loss on unpaired, labelled completions (KTO).
      beta: the default of :attr:`LMDPOConfig.beta`, whose meaning differs by loss.
      coefficients: the :class:`LMDPOConfig` hyperparameters passed to ``fn`` after its inputs,
        in order (the others are ignored by this loss).
      description: one line, for the docs and ``--help``.
      use_when: one line: when to choose this loss (docs and ``--help``).
    """

    fn: Callable[..., Any]
    reference: bool
    beta: float
    coefficients: tuple[str, ...]
    description: str
    use_when: str
    paired: bool = True
    nll: bool = False


# beta's meaning and scale differ by loss: KL strength (rpo, sigmoid, hinge, robust, kto), tau
# (ipo), the odds-ratio weight lambda (orpo), the reward scale of length-normalised log-probs
# (simpo). Defaults measured on 3-digit addition from an early-stopped SFT policy (see the
# README's DPO table); TRL's 0.1 let the chosen answers' log-probs fall and hurt exact match
# there. rpo (the default loss) with rpo_alpha 1 (the paper's value): from a policy at exact
# match 1.0 it stays at 1.0 where sigmoid falls to 0.82 (see purejaxpo.lm.dpo).
PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "rpo": PreferenceLoss(
        losses.rpo_loss, reference=True, nll=True, beta=0.5,
        coefficients=("beta", "rpo_alpha", "label_smoothing"),
        description="RPO: DPO + rpo_alpha * NLL of the chosen completion (per token)",
        use_when="the default: the chosen answers are ones the policy should give (it keeps "
                 "their probability up, so a good policy stays good)"),
    "sigmoid": PreferenceLoss(
        losses.dpo_loss, reference=True, beta=0.5, coefficients=("beta", "label_smoothing"),
        description="DPO: -log sigmoid(beta * margin); conservative DPO with label_smoothing",
        use_when="only the ranking is to be learned, not the chosen answers themselves (DPO "
                 "may lower both; it did from a perfect policy)"),
    "ipo": PreferenceLoss(
        losses.ipo_loss, reference=True, beta=0.1, coefficients=("beta",),
        description="IPO: (margin - 1 / (2 beta))^2, beta is tau",
        use_when="deterministic preferences where DPO's margin would grow without bound; a "
                 "finite target margin, the smallest log-prob moves"),
    "hinge": PreferenceLoss(
        losses.hinge_loss, reference=True, beta=0.5, coefficients=("beta",),
        description="SLiC hinge: relu(1 - beta * margin)",
        use_when="stop pushing a pair once its margin is reached (no gradient beyond it)"),
    "robust": PreferenceLoss(
        losses.robust_dpo_loss, reference=True, beta=0.5,
        coefficients=("beta", "label_smoothing"),
        description="robust DPO: unbiased under labels flipped with probability label_smoothing",
        use_when="noisy labels, with --set label_smoothing=<flip rate>; equals DPO at 0"),
    "kto": PreferenceLoss(
        losses.kto_loss, reference=True, beta=0.5, paired=False,
        coefficients=("beta", "kto_desirable_weight", "kto_undesirable_weight"),
        description="KTO: unpaired labelled completions vs a reference point from "
                    "mismatched pairs",
        use_when="data labelled good / bad one completion at a time, not in pairs"),
    "orpo": PreferenceLoss(
        losses.orpo_loss, reference=False, beta=0.1, coefficients=("beta",),
        description="ORPO: chosen NLL + beta (lambda) * odds-ratio penalty, reference-free",
        use_when="no reference model (memory, or no SFT stage): SFT and preference in one loss"),
    "simpo": PreferenceLoss(
        losses.simpo_loss, reference=False, beta=2.0, coefficients=("beta", "simpo_gamma"),
        description="SimPO: -log sigmoid(beta * (mean logp chosen - mean logp rejected) - "
                    "simpo_gamma), reference-free",
        use_when="reference-free ranking with length normalisation; it moves the chosen "
                 "answers least"),
}
"""Every DPO-family loss by its ``LMDPOConfig.loss`` name (``purejaxpo lm dpo --loss``). Adding a
loss is adding an entry here (plus its function in :mod:`purejaxpo.losses`). The margin is the
difference of summed log-ratios ``log pi / pi_ref`` of the chosen and rejected completions."""


def describe_preference_losses(indent: str = "  ") -> str:
    """Two lines per :data:`PREFERENCE_LOSSES` entry (name, default beta, description; when to
    use it), and what "margin" means in them."""
    width = max(map(len, PREFERENCE_LOSSES))
    lines = []
    for name, spec in PREFERENCE_LOSSES.items():
        lines.append(f"{indent}{name:<{width}}  (beta {spec.beta}) {spec.description}")
        lines.append(f"{indent}{'':<{width}}  use: {spec.use_when}")
    lines.append(f"{indent}(margin: the chosen minus the rejected completion's summed log-ratio "
                 "log pi/pi_ref)")
    return "\n".join(lines)
