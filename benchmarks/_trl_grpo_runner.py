"""TRL side of the GRPO throughput benchmark: Hugging Face TRL's ``GRPOTrainer`` on CPU, fp32.

Runs only inside TRL's own virtual environment (NOT purejaxpo's; it never imports purejaxpo)::

    python3 -m venv .venv-trl
    .venv-trl/bin/pip install -r benchmarks/requirements-trl.txt
    .venv-trl/bin/python benchmarks/_trl_grpo_runner.py [--beta 0.04] [--loss-type grpo] \\
        [--steps 20] [--warmup 3] [--json PATH]

It prints exactly one JSON line on stdout (progress/warnings go to stderr)::

    {"framework": "trl", "trl_version": .., "torch_version": .., "transformers_version": ..,
     "params": .., "step_s": [..], "median_step_s": .., "completion_tokens_per_s": ..,
     "completions_per_step": 64, "beta": .., "loss_type": .., "threads": .., ...}

What it measures: the wall time of each GRPO training step (one optimiser update) of a tiny
random-init GPT-2 (4 layers, width 128, 4 heads, 32 positions, 15-token vocabulary; see
``_trl_common.py``) on 3-digit addition with the answer reversed. One step = sampling 8 prompts x 8
generations = 64 completions of at most 5 tokens (temperature 1.0, HF ``generate`` with KV cache), the
Python exact-match reward, group-normalised advantages, (with ``beta > 0``) the reference model's
log-probs, the policy forward/backward and the AdamW step. ``--warmup`` steps run first untimed;
the next ``--steps`` are timed with a ``TrainerCallback`` (``on_step_begin`` -> ``on_step_end``,
``time.perf_counter``).

Settings (TRL 1.16.0 ``GRPOConfig``): ``per_device_train_batch_size=64`` (in TRL 1.x this counts
completions, not prompts), ``num_generations=8``, ``gradient_accumulation_steps=1`` (so
``steps_per_generation=1``: fresh completions every step), ``num_iterations=1``,
``max_completion_length=5``, ``temperature=1.0``, ``beta`` from ``--beta`` (default 0.04; TRL's own
default is 0.0, with which it does not load a reference model at all), ``loss_type`` from
``--loss-type`` (default ``grpo``; TRL's own default is ``dapo``), ``scale_rewards="group"``,
``epsilon=0.2``, constant learning rate (``--lr``, default TRL's 1e-6), ``use_cpu=True``,
``bf16=False`` (TRL 1.x defaults it to True), ``activation_checkpointing=False`` and
``gradient_checkpointing=False`` (TRL 1.x defaults the latter to True; transformers 5.24 renamed it
and takes the old name only while the new one is unset), ``use_vllm=False``, logging/saving/evaluation off, ``report_to="none"``. The policy is
loaded by path from a temporary folder and, with ``beta > 0``, TRL builds the reference model from the
policy's ``config._name_or_path`` (the same folder). GPT-2 dropout is 0 (``--dropout``), so policy and
reference agree exactly at the start.

Timing on a shared machine: torch's intra-op pool (2 threads on this 2-core machine) collapses when
another process keeps a core busy (a step measured 5 s instead of 0.13 s). The JSON carries
``others_busy_cores`` (CPU the rest of the machine used during the timed steps, from /proc/stat) and
``cpu_s_per_wall_s`` so that a driver can reject contaminated runs; ``--threads 1`` is far less
sensitive.

Completion-token count (``completion_tokens_per_s``): the reward function receives TRL's
``completion_ids`` (each completion already cut after its first EOS, exactly the tokens that enter
the loss mask) and adds up their lengths; the timer callback takes that count at each
``on_step_end``. This is the same number as TRL's ``completions/mean_length`` x 64, but read per
step without turning logging on, so it is exact and cannot mix two steps. It counts every sampled
token up to and including the first EOS, whatever its id; a ``<pad>`` that the (random) policy
itself samples before EOS is a generated token and is counted. ``completion_tokens_nonpad_per_s``
gives the variant that drops such sampled ``<pad>`` ids too. Per step, tokens/s = tokens of that
step / its wall time; the reported figure is the median over the timed steps.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _trl_common as common  # noqa: E402  (sets HF_HUB_OFFLINE etc. before transformers loads)

NUM_GENERATIONS = 8
PROMPTS_PER_STEP = 8
COMPLETIONS_PER_STEP = NUM_GENERATIONS * PROMPTS_PER_STEP  # 64
MAX_COMPLETION_LENGTH = 5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_model_args(p)
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (default 0.04; 0 = no reference model)")
    p.add_argument("--loss-type", default="grpo", help="GRPOConfig.loss_type (default grpo; TRL's default is dapo)")
    p.add_argument("--completion-length", type=int, default=MAX_COMPLETION_LENGTH,
                   help=f"max_completion_length (default {MAX_COMPLETION_LENGTH}); 8 prompt tokens + "
                        "this must fit --positions")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)

    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    common.quiet_libraries()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    total_steps = args.warmup + args.steps
    a, b = common.make_problems(PROMPTS_PER_STEP * total_steps + 64, args.seed)
    dataset = Dataset.from_dict(
        {
            "prompt": [common.prompt_text(int(x), int(y)) for x, y in zip(a, b)],
            "answer": [common.answer_text(int(x), int(y)) for x, y in zip(a, b)],
        }
    )

    step_tokens = {"all": 0, "nonpad": 0, "correct": 0}
    per_step = {"tokens": [], "nonpad": [], "reward": []}

    def exact_match_reward(prompts, completions, completion_ids, answer, **kwargs):
        """1.0 where the decoded completion is the reversed answer and the completion ended with EOS."""
        step_tokens["all"] += sum(len(ids) for ids in completion_ids)
        step_tokens["nonpad"] += sum(sum(1 for t in ids if t != common.PAD_ID) for ids in completion_ids)
        rewards = [
            1.0 if (text.strip() == ans and len(ids) > 0 and ids[-1] == common.EOS_ID) else 0.0
            for text, ids, ans in zip(completions, completion_ids, answer)
        ]
        step_tokens["correct"] += int(sum(rewards))
        return rewards

    timer = common.StepTimer()

    def take_step_counts():
        per_step["tokens"].append(step_tokens["all"])
        per_step["nonpad"].append(step_tokens["nonpad"])
        per_step["reward"].append(step_tokens["correct"] / COMPLETIONS_PER_STEP)
        step_tokens.update(all=0, nonpad=0, correct=0)

    timer.on_end_hooks.append(take_step_counts)

    # Trainer.train() prints its summary dict on stdout: keep stdout for the one JSON line.
    with tempfile.TemporaryDirectory(prefix="trl_grpo_") as tmp, contextlib.redirect_stdout(sys.stderr):
        model_path, n_params = common.build_model_dir(args, tmp)
        tokenizer = common.load_tokenizer(model_path)
        common.check_tokenizer(tokenizer)

        config = GRPOConfig(
            **common.base_training_kwargs(args, os.path.join(tmp, "out"), COMPLETIONS_PER_STEP),
            num_generations=NUM_GENERATIONS,
            max_completion_length=args.completion_length,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            beta=args.beta,
            loss_type=args.loss_type,
            num_iterations=1,
            use_vllm=False,
            log_completions=False,
            model_init_kwargs={"dtype": "float32"},
        )
        common.check_config(config)
        trainer = GRPOTrainer(
            model=model_path,
            reward_funcs=exact_match_reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        assert (trainer.ref_model is not None) == (args.beta != 0.0)
        assert next(trainer.model.parameters()).dtype == torch.float32
        trainer.train()

    durations = timer.durations
    if len(durations) != total_steps or len(per_step["tokens"]) != total_steps:
        raise RuntimeError(f"expected {total_steps} steps, timed {len(durations)}")
    timed = slice(args.warmup, total_steps)
    step_s = durations[timed]
    tokens = per_step["tokens"][timed]
    nonpad = per_step["nonpad"][timed]

    result = {
        "framework": "trl",
        "algo": "grpo",
        **common.common_result(args, n_params),
        "step_s": step_s,
        **common.timing_summary(timer, args.warmup),
        "median_step_s": common.median(step_s),
        "completion_tokens_per_s": common.median([n / s for n, s in zip(tokens, step_s)]),
        "completion_tokens_nonpad_per_s": common.median([n / s for n, s in zip(nonpad, step_s)]),
        "completion_tokens_per_step": tokens,
        "mean_completion_length": sum(tokens) / (len(tokens) * COMPLETIONS_PER_STEP),
        "completions_per_step": COMPLETIONS_PER_STEP,
        "prompts_per_step": PROMPTS_PER_STEP,
        "num_generations": NUM_GENERATIONS,
        "max_completion_length": args.completion_length,
        "temperature": 1.0,
        "beta": args.beta,
        "loss_type": args.loss_type,
        "num_iterations": 1,
        "reference_model": args.beta != 0.0,
        "mean_reward": sum(per_step["reward"][timed]) / len(step_s),
        "warmup_step_s": durations[: args.warmup],
    }
    common.emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
