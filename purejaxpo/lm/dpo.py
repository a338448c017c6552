"""Preference optimisation on a sequence policy: DPO and its family.

The losses (per example, from :mod:`purejaxpo.losses`) are the entries of
:data:`purejaxpo.lm.preference.PREFERENCE_LOSSES`, listed at the end of this docstring; the trainer
reads everything it needs to know about a loss (its function, whether it needs the reference
model, whether it takes pairs, which coefficients) from that table.

One training step is one pure function, compiled once: draw a minibatch of pairs, one
teacher-forced pass of the policy over chosen and rejected completions together, the loss, an
Adam step. The reference model's log-probs are by default computed once for the whole dataset
before training (:func:`reference_log_probs`), so the reference model need not stay in memory;
with ``precompute_ref=False`` the step runs the reference model itself.

Shapes: ``n`` examples in the dataset, ``B`` per step, ``[B, N]`` completion tokens.

Which loss. DPO (``sigmoid``) constrains only the *difference* of the chosen and rejected
log-ratios, so it may lower the chosen answers as long as the rejected ones fall faster. Tried
as a user would (3-digit addition, ``purejaxpo lm dpo --init <policy>``, 1000 steps of 64
pairs, the policy's own mistakes as rejected; 2-core CPU):

* from an SFT policy at held-out exact match 1.000, ``--loss sigmoid`` ranked 99.8% of the
  held-out pairs right but lowered the chosen answers (-0.76 nats) and exact match fell to
  0.820; ``rpo`` (DPO plus ``rpo_alpha`` times the chosen answers' NLL per token, TRL's
  ``rpo_alpha``) ranked 100% right and kept exact match at 1.000;
* from an early-stopped SFT policy (exact match 0.225), ``rpo`` reached exact match 0.992
  and preference accuracy 99.2%.

So ``rpo`` is the default: use it whenever the chosen completions are answers the policy
should give (verifiable tasks, pairs made from correct answers). Use ``sigmoid`` (or ``ipo``,
``hinge``) when only the ranking is meant to be learned and the chosen completions are not
targets in themselves, ``robust`` / ``label_smoothing`` for noisy labels, ``kto`` for
unpaired good / bad labels, and ``orpo`` or ``simpo`` to train without a reference model.
``rpo_alpha=0`` is exactly DPO.

Losses (``LMDPOConfig.loss``; name, default beta, what it is, when to use it):

{losses}
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo import losses
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
from purejaxpo.lm.config import LMDPOConfig
from purejaxpo.lm.model import TransformerConfig
from purejaxpo.lm.pairs import Pairs, Unpaired, pairs_to_unpaired
from purejaxpo.lm.preference import PREFERENCE_LOSSES, describe_preference_losses
from purejaxpo.lm.sampling import completion_log_probs
from purejaxpo.metrics import all_finite
from purejaxpo.settings import json_safe
from purejaxpo.update import gradient_step

if __doc__:  # None under python -OO
    __doc__ = __doc__.format(losses=describe_preference_losses())

Array = jax.Array


class SequenceLogProbs(NamedTuple):
    """Per-example sums and token counts of completion log-probs."""

    total: Array  # [B] sum over completion tokens
    length: Array  # [B] number of completion tokens

    @property
    def mean(self) -> Array:
        return self.total / jnp.maximum(self.length, 1)


def sequence_log_probs(params, model: TransformerConfig, prompts, prompt_valid, completions,
                       mask) -> SequenceLogProbs:
    """Summed log-probs ``[B]`` of each completion given its prompt (temperature 1)."""
    token = completion_log_probs(params, model, prompts, prompt_valid, completions, mask)
    return SequenceLogProbs(losses.masked_sum(token, mask, axis=-1),
                            mask.sum(axis=-1).astype(jnp.float32))


def _pair_log_probs(params, model, pairs: Pairs) -> tuple[SequenceLogProbs, SequenceLogProbs]:
    """Chosen and rejected log-probs from one pass over the ``[2B]`` stacked batch."""
    both = sequence_log_probs(params, model, *pairs.stacked())
    n = pairs.prompts.shape[0]
    split = lambda x: (x[:n], x[n:])  # noqa: E731
    (tc, tr), (lc, lr) = split(both.total), split(both.length)
    return SequenceLogProbs(tc, lc), SequenceLogProbs(tr, lr)


class KTOData(NamedTuple):
    """Unpaired examples with, for each, a mismatched completion (another example's)."""

    examples: Unpaired
    mismatched: Array  # [n] index of the example whose completion is paired with this prompt


def kto_data(data: Pairs | Unpaired) -> KTOData:
    examples = pairs_to_unpaired(data) if isinstance(data, Pairs) else data
    n = len(examples)
    return KTOData(examples, (jnp.arange(n) + 1) % n)


def _kto_log_probs(params, model, data: KTOData, idx: Array):
    """Log-probs of examples ``idx`` and of their mismatched completions, in one pass."""
    ex = data.examples
    mis = data.mismatched[idx]
    cat = lambda a, b: jnp.concatenate([a, b], axis=0)  # noqa: E731
    both = sequence_log_probs(
        params, model, cat(ex.prompts[idx], ex.prompts[idx]),
        cat(ex.prompt_valid[idx], ex.prompt_valid[idx]),
        cat(ex.completions[idx], ex.completions[mis]),
        cat(ex.completion_mask[idx], ex.completion_mask[mis]))
    b = idx.shape[0]
    return both.total[:b], both.total[b:]


def reference_log_probs(ref_params, model: TransformerConfig, data, *, batch: int = 512):
    """Reference log-probs of the whole dataset, computed once (``[n]`` arrays), in batches of
    ``batch`` examples (``lax.map``, so memory stays that of one batch; jittable).

    For pairs: ``(chosen, rejected)`` sums; for KTO data: ``(completion, mismatched)`` sums.
    """
    kto = isinstance(data, KTOData)
    n = len(data.examples) if kto else len(data)
    batch = min(batch, n)
    num = -(-n // batch)
    # The last batch is padded with repeats of the last example, and the padding dropped.
    idx = jnp.minimum(jnp.arange(num * batch), n - 1).reshape(num, batch)

    def one(idx):
        if kto:
            return _kto_log_probs(ref_params, model, data, idx)
        return tuple(x.total for x in _pair_log_probs(
            ref_params, model, jax.tree_util.tree_map(lambda a: a[idx], data)))

    out = jax.lax.map(one, idx)
    return tuple(x.reshape(-1)[:n] for x in out)


def pair_loss(config: LMDPOConfig, hp, chosen: SequenceLogProbs, rejected: SequenceLogProbs,
              ref_chosen: Array | None, ref_rejected: Array | None) -> Array:
    """Per-example loss ``[B]`` of a paired loss: the table entry's function on summed
    log-ratios (reference-based losses) or length-normalised log-probs (reference-free), and
    the chosen completions' NLL per token where the loss takes it (``rpo``)."""
    spec = config.loss_spec
    if not spec.paired:
        raise ValueError(f"loss={config.loss!r} is not a paired loss")
    if spec.reference:
        inputs = (chosen.total - ref_chosen, rejected.total - ref_rejected)
    else:
        inputs = (chosen.mean, rejected.mean)
    if spec.nll:
        # TRL's NLL is the mean over all chosen tokens of the batch: the batch mean of each
        # completion's NLL divided by the batch's mean chosen length.
        inputs += (-chosen.total / jnp.maximum(chosen.length.mean(), 1.0),)
    return spec.fn(*inputs, *[hp[name] for name in spec.coefficients])


def make_dpo_step(config: LMDPOConfig, model: TransformerConfig):
    """``step(state, hyperparams, data, ref) -> (state, metrics)``.

    ``data`` is :class:`~purejaxpo.lm.pairs.Pairs` (or :class:`KTOData` for ``kto``); ``ref``
    is the tuple from :func:`reference_log_probs` (``precompute_ref``) or the reference
    parameters (``precompute_ref=False``), and is ignored by the reference-free losses.
    """
    spec = config.loss_spec
    kto = not spec.paired

    def loss_fn(params, inputs):
        hp, data, ref, idx = inputs
        if kto:
            logp, mis_logp = _kto_log_probs(params, model, data, idx)
            if config.precompute_ref:
                ref_logp, ref_mis = ref[0][idx], ref[1][idx]
            else:
                ref_logp, ref_mis = jax.lax.stop_gradient(_kto_log_probs(ref, model, data, idx))
            z0 = losses.kto_reference_point(mis_logp - ref_mis)
            desirable = data.examples.desirable[idx]
            per = spec.fn(logp - ref_logp, desirable, z0,
                          *[hp[name] for name in spec.coefficients])
            reward = hp["beta"] * (logp - ref_logp)
            metrics = {"kto_reference_point": z0,
                       "reward_desirable": losses.masked_mean(reward, desirable),
                       "reward_undesirable": losses.masked_mean(reward, ~desirable),
                       "tokens": 2 * data.examples.completion_mask[idx].sum()}
            return per.mean(), metrics
        batch = jax.tree_util.tree_map(lambda a: a[idx], data)
        chosen, rejected = _pair_log_probs(params, model, batch)
        ref_c = ref_r = None
        if spec.reference:
            if config.precompute_ref:
                ref_c, ref_r = ref[0][idx], ref[1][idx]
            else:
                rc, rr = _pair_log_probs(ref, model, batch)
                ref_c, ref_r = jax.lax.stop_gradient((rc.total, rr.total))
        per = pair_loss(config, hp, chosen, rejected, ref_c, ref_r)
        if ref_c is None:
            margin = chosen.mean - rejected.mean
        else:
            margin = (chosen.total - ref_c) - (rejected.total - ref_r)
        metrics = {"accuracy": losses.implicit_reward_accuracy(margin, jnp.zeros_like(margin))
                   .mean(), "margin": margin.mean(), "chosen_logp": chosen.total.mean(),
                   "rejected_logp": rejected.total.mean(),
                   "tokens": chosen.length.sum() + rejected.length.sum()}
        return per.mean(), metrics

    def step(state: LMState, hyperparams, data, ref):
        key, idx_key = jax.random.split(state.key)
        n = (data.examples if kto else data).prompts.shape[0]
        idx = jax.random.randint(idx_key, (config.batch_size,), 0, n)
        (params, opt_state), metrics = gradient_step(
            lambda p, inputs: _with_loss(loss_fn(p, inputs)), optimizer(hyperparams))(
            (state.params, state.opt_state), (hyperparams, data, ref, idx))
        return state._replace(params=params, opt_state=opt_state, key=key,
                              step=state.step + 1), metrics

    return step


def _with_loss(out):
    loss, metrics = out
    return loss, {**metrics, "loss": loss}


class PreferenceEval(NamedTuple):
    """Held-out preference statistics of a policy."""

    accuracy: float  # fraction of pairs ranked right by the implicit reward (ties count half)
    chosen_logp: np.ndarray  # [n] summed log-probs of the chosen completions
    rejected_logp: np.ndarray  # [n]


def evaluate_pairs(config: LMDPOConfig, params, model: TransformerConfig, pairs: Pairs,
                   ref: tuple[Array, Array] | None) -> PreferenceEval:
    """Implicit-reward preference accuracy on ``pairs``: ``logratio(chosen) >
    logratio(rejected)`` for reference-based losses (KTO included), ``mean logp(chosen) >
    mean logp(rejected)`` for the reference-free ones (their implicit reward). A tie counts as
    half right, so a policy equal to its reference scores 0.5, not 0; parameters that are not
    all finite score NaN."""
    chosen, rejected = jax.jit(lambda p: _pair_log_probs(p, model, pairs))(params)
    if not config.loss_spec.reference or ref is None:
        margin = chosen.mean - rejected.mean
    else:
        margin = (chosen.total - ref[0]) - (rejected.total - ref[1])
    acc = float(jnp.mean(jnp.where(margin == 0, 0.5, (margin > 0).astype(jnp.float32))))
    if not bool(all_finite(params)):
        acc = float("nan")
    return PreferenceEval(acc, np.asarray(chosen.total), np.asarray(rejected.total))


class DPOResult(NamedTuple):
    fit: FitResult
    before: PreferenceEval
    after: PreferenceEval

    def preference_summary(self) -> dict[str, float | None]:
        """Held-out preference accuracy before and after, and the mean change of the chosen
        and rejected log-probs (JSON-ready: non-finite numbers as None)."""
        return json_safe({
            "pref_accuracy": self.after.accuracy,
            "pref_accuracy_before": self.before.accuracy,
            "chosen_logp_delta": float(np.mean(self.after.chosen_logp - self.before.chosen_logp)),
            "rejected_logp_delta": float(np.mean(self.after.rejected_logp
                                                 - self.before.rejected_logp)),
        })


def training_data(config: LMDPOConfig, train_pairs: Pairs | Unpaired) -> Pairs | KTOData:
    """What :func:`dpo_program` trains on for ``config``'s loss: the pairs, or for the unpaired
    losses (``kto``) the labelled completions; ``ValueError`` for unpaired data with a loss
    that needs pairs."""
    if not config.loss_spec.paired:
        return kto_data(train_pairs)
    if isinstance(train_pairs, Unpaired):
        unpaired = [name for name, s in PREFERENCE_LOSSES.items() if not s.paired]
        raise ValueError(f"loss={config.loss!r} needs pairs (prompt, chosen, rejected); "
                         f"unpaired data (completion, label) only works with loss in {unpaired}")
    return train_pairs


def dpo_program(config: LMDPOConfig, params: Any, model: TransformerConfig, data, *,
                ref_params: Any = None):
    """Preference optimisation from ``params`` on ``data`` (:class:`Pairs`, or
    :class:`KTOData` for ``kto``) as a :class:`~purejaxpo.algos.base.Program`. What the step
    takes from the reference model (``params`` unless ``ref_params`` is given) is made by
    ``init`` and kept in the state: its log-probs of the whole dataset
    (``precompute_ref``), or its parameters (none for a policy with LoRA adapters: the
    adapters switched off in each step); nothing for the reference-free losses."""
    spec = config.loss_spec
    if not spec.reference:
        reference = None
    elif config.precompute_ref:
        def reference(p):
            return reference_log_probs(p if ref_params is None else ref_params, model, data)
    else:
        reference = reference_of(params) if ref_params is None else (lambda p: ref_params)

    return lm_program(make_dpo_step(config, model), num_steps=config.steps,
                      hyperparams=config.hyperparams(), start=lambda key: (params, key),
                      reference=reference,
                      consts=(data,) if spec.reference else (data, None))


def train_dpo(config: LMDPOConfig, params: Any, model: TransformerConfig, train_pairs,
              eval_pairs: Pairs, *, ref_params: Any = None, progress: bool = True,
              checkpoint_dir: str | None = None, resume: bool = False,
              checkpoint_every: int | None = None) -> DPOResult:
    """Runs preference optimisation from ``params`` (the reference model is ``params`` unless
    ``ref_params`` is given) on ``train_pairs`` (:class:`Pairs`, or :class:`Unpaired` for
    ``kto``) from ``PRNGKey(config.seed)``; evaluates held-out preference accuracy and
    log-prob movement on ``eval_pairs``. ``checkpoint_dir`` / ``resume`` /
    ``checkpoint_every`` as in
    :func:`~purejaxpo.lm.common.fit`."""
    task = config.make_task()
    spec = config.loss_spec
    data = training_data(config, train_pairs)
    eval_ref = None
    if spec.reference:
        eval_ref = jax.jit(lambda p: reference_log_probs(p, model, eval_pairs))(
            params if ref_params is None else ref_params)
    before = evaluate_pairs(config, params, model, eval_pairs, eval_ref)
    result = fit(dpo_program(config, params, model, data, ref_params=ref_params),
                 jax.random.PRNGKey(config.seed),
                 evaluate=make_evaluator(model, task, config.eval_prompts),
                 chunk=checkpoint_every or config.log_every, progress=progress,
                 desc=config.loss,
                 show=("loss", "accuracy"), checkpoint_dir=checkpoint_dir, resume=resume,
                 initial_params=params, meta=describe("lm dpo", config))
    after = evaluate_pairs(config, result.state.params, model, eval_pairs, eval_ref)
    return DPOResult(result, before, after)
