"""TRL side of the DPO throughput benchmark: Hugging Face TRL's ``DPOTrainer`` on CPU, fp32.

Runs only inside TRL's own virtual environment (NOT purejaxpo's; it never imports purejaxpo)::

    python3 -m venv .venv-trl
    .venv-trl/bin/pip install -r benchmarks/requirements-trl.txt
    .venv-trl/bin/python benchmarks/_trl_dpo_runner.py [--precompute-ref] \\
        [--steps 20] [--warmup 3] [--json PATH]

It prints exactly one JSON line on stdout (progress/warnings go to stderr)::

    {"framework": "trl", "trl_version": .., "torch_version": .., "transformers_version": ..,
     "params": .., "step_s": [..], "median_step_s": .., "pairs_per_s": .., "pairs_per_step": 64,
     "beta": 0.1, "loss_type": "sigmoid", "precompute_ref": false, "threads": .., ...}

What it measures: the wall time of each DPO training step (one optimiser update) of the same tiny
random-init GPT-2 as the GRPO runner (4 layers, width 128, 4 heads, 32 positions, 15-token
vocabulary; see ``_trl_common.py``). One step = 64 preference pairs: the collator pads
prompt+chosen and prompt+rejected (13 tokens each here), the reference model's forward on both
(unless ``--precompute-ref``), the policy forward/backward on both, the sigmoid DPO loss and the
AdamW step. ``--warmup`` steps run first untimed; the next ``--steps`` are timed with a
``TrainerCallback`` (``on_step_begin`` -> ``on_step_end``, ``time.perf_counter``); the time of
fetching and collating a batch (before ``on_step_begin``) is outside it, as in the GRPO runner.
``pairs_per_s`` = 64 / ``median_step_s``.

Pairs: the prompt is 3-digit addition as in ``_trl_common.py`` (``"1 2 3 + 4 5 6 ="``); chosen is the
correct reversed answer + EOS (``" 9 7 5 0<eos>"``), rejected is the same with one digit (seeded
position and value) changed. Completions start with a space because TRL 1.16 tokenises
``prompt + chosen`` as one string.

Settings (TRL 1.16.0 ``DPOConfig``): ``per_device_train_batch_size=64``,
``gradient_accumulation_steps=1``, ``max_length=16``, ``beta=0.1``, ``loss_type=["sigmoid"]``
(a list in TRL 1.x), reference model loaded by TRL from the policy's saved path (the default when
``ref_model`` is not passed); ``precompute_ref_log_probs=False`` unless ``--precompute-ref`` (then
TRL runs the reference over the whole dataset before training, untimed, and drops the reference
model), ``disable_dropout=True`` (TRL's DPO default), constant learning rate (``--lr``, default
TRL's 1e-6), ``use_cpu=True``, ``bf16=False`` (TRL 1.x defaults it to True),
``activation_checkpointing=False`` and ``gradient_checkpointing=False`` (TRL 1.x defaults the latter to
True; transformers 5.24 renamed it), logging/saving/evaluation off, ``report_to="none"``.

Timing on a shared machine: see the GRPO runner's docstring; the JSON carries ``others_busy_cores``
and ``cpu_s_per_wall_s`` for the same reason.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _trl_common as common  # noqa: E402  (sets HF_HUB_OFFLINE etc. before transformers loads)

PAIRS_PER_STEP = 64
MAX_LENGTH = 16
BETA = 0.1
LOSS_TYPE = "sigmoid"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_model_args(p)
    p.add_argument(
        "--precompute-ref",
        action="store_true",
        help="precompute the reference log-probs before training (TRL's precompute_ref_log_probs)",
    )
    return p.parse_args(argv)


def make_pairs(n: int, seed: int) -> dict:
    """Prompts, chosen (correct reversed answer + EOS) and rejected (one digit changed)."""
    import numpy as np

    a, b = common.make_problems(n, seed)
    rng = np.random.default_rng(seed + 1)
    prompts, chosen, rejected = [], [], []
    for x, y in zip(a.tolist(), b.tolist()):
        digits = common.answer_text(x, y).split()
        pos = int(rng.integers(0, len(digits)))
        wrong = (int(digits[pos]) + int(rng.integers(1, 10))) % 10  # any other digit
        bad = list(digits)
        bad[pos] = str(wrong)
        prompts.append(common.prompt_text(x, y))
        chosen.append(" " + " ".join(digits) + common.EOS)
        rejected.append(" " + " ".join(bad) + common.EOS)
    return {"prompt": prompts, "chosen": chosen, "rejected": rejected}


def main(argv=None) -> dict:
    args = parse_args(argv)

    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    common.quiet_libraries()
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference precompute progress bar
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    total_steps = args.warmup + args.steps
    dataset = Dataset.from_dict(make_pairs(PAIRS_PER_STEP * total_steps, args.seed))
    timer = common.StepTimer()

    # Trainer.train() prints its summary dict on stdout: keep stdout for the one JSON line.
    with tempfile.TemporaryDirectory(prefix="trl_dpo_") as tmp, contextlib.redirect_stdout(sys.stderr):
        model_path, n_params = common.build_model_dir(args, tmp)
        tokenizer = common.load_tokenizer(model_path)
        common.check_tokenizer(tokenizer)

        config = DPOConfig(
            **common.base_training_kwargs(args, os.path.join(tmp, "out"), PAIRS_PER_STEP),
            max_length=MAX_LENGTH,
            beta=BETA,
            loss_type=[LOSS_TYPE],
            precompute_ref_log_probs=args.precompute_ref,
            disable_dropout=True,
            model_init_kwargs={"dtype": "float32"},
        )
        common.check_config(config)
        trainer = DPOTrainer(
            model=model_path,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        assert (trainer.ref_model is None) == args.precompute_ref
        assert next(trainer.model.parameters()).dtype == torch.float32
        # The tokenised data is what we meant: 8 prompt tokens, 5 completion tokens ending in EOS.
        ex = trainer.train_dataset[0]
        assert len(ex["prompt_ids"]) == common.PROMPT_TOKENS, ex
        assert len(ex["chosen_ids"]) == len(ex["rejected_ids"]) == common.ANSWER_TOKENS, ex
        assert ex["chosen_ids"][-1] == ex["rejected_ids"][-1] == common.EOS_ID, ex
        trainer.train()

    durations = timer.durations
    if len(durations) != total_steps:
        raise RuntimeError(f"expected {total_steps} steps, timed {len(durations)}")
    step_s = durations[args.warmup :]
    median_step_s = common.median(step_s)

    result = {
        "framework": "trl",
        "algo": "dpo",
        **common.common_result(args, n_params),
        "step_s": step_s,
        **common.timing_summary(timer, args.warmup),
        "median_step_s": median_step_s,
        "pairs_per_s": PAIRS_PER_STEP / median_step_s,
        "pairs_per_step": PAIRS_PER_STEP,
        "max_length": MAX_LENGTH,
        "sequence_length": common.PROMPT_TOKENS + common.ANSWER_TOKENS,
        "beta": BETA,
        "loss_type": LOSS_TYPE,
        "precompute_ref": args.precompute_ref,
        "reference_model": not args.precompute_ref,
        "warmup_step_s": durations[: args.warmup],
    }
    common.emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
