"""Language-model policy optimisation on sequence policies, in pure JAX.

* :mod:`~purejaxpo.lm.model`: a decoder-only flax transformer (RoPE or learned positions) with
  an explicit KV cache, a reward-model variant with a scalar head and a value model (PPO's
  critic) with a head at every position.
* :mod:`~purejaxpo.lm.sampling`: jitted sampling (temperature, top-k, top-p, EOS and masks) and
  per-token log-probs of completions.
* :mod:`~purejaxpo.lm.objectives`: token-level GRPO-family objectives (token or sequence
  ratios, the three loss aggregations) composed from :mod:`purejaxpo.losses`.
* Trainers, each a pure ``step(state, hyperparams, ...)`` and a
  :class:`~purejaxpo.algos.base.Program` (``init(key, hyperparams)``, ``run(state, n)``:
  :func:`~purejaxpo.lm.common.lm_program`) run in checkpointed ``lax.scan`` chunks:
  :mod:`~purejaxpo.lm.sft`, :mod:`~purejaxpo.lm.ppo` (PPO with a value head), :mod:`~purejaxpo.lm.grpo` (GRPO, BNPO, Dr. GRPO, DAPO,
  GSPO: :data:`~purejaxpo.lm.config.LOSS_PRESETS`; advantages by GRPO's group baseline, RLOO
  or REINFORCE++: :data:`~purejaxpo.lm.estimators.ADVANTAGE_ESTIMATORS`, with when to use which in
  :mod:`~purejaxpo.lm.grpo`), :mod:`~purejaxpo.lm.dpo` (RPO, i.e. DPO plus the chosen
  answers' NLL, by default; DPO, cDPO, IPO, hinge, robust DPO, KTO, ORPO, SimPO: the table
  :data:`~purejaxpo.lm.preference.PREFERENCE_LOSSES`), :mod:`~purejaxpo.lm.reward_model`
  (Bradley-Terry). A run whose loss or parameters turn non-finite is flagged, with the first
  such step (:mod:`~purejaxpo.lm.common`).
* :mod:`~purejaxpo.lm.pairs`: preference pairs (synthetic or JSON lines);
  :mod:`~purejaxpo.lm.checkpoint`: orbax parameters plus a JSON of the model config.
* Tasks with verifiable rewards (addition, sorting) live in :mod:`purejaxpo.lm.tasks`.

On the command line: ``purejaxpo lm sft|grpo|ppo|dpo|rm|eval``.
"""
