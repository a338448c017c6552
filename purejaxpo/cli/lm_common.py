"""What the ``purejaxpo lm`` commands share: the task, reward and ``--set`` flags turned into a
validated config, where training starts (``--init`` or ``--model``), saving ``--out``, the
printed and ``--json`` report, and the flags themselves."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, NamedTuple

from purejaxpo.settings import device_description, parse_settings, write_json


def task_options(items) -> dict[str, Any]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--task-arg {item!r} is invalid: expected name=value")
        name, text = item.split("=", 1)
        value: Any = text
        low = text.strip().lower()
        if low in ("true", "false"):
            value = low == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        out[name.strip()] = value
    return out


def reward_weights(items) -> tuple[tuple[str, float], ...] | None:
    if not items:
        return None
    out = []
    for item in items:
        name, _, weight = item.rpartition("=") if "=" in item else (item, "", "")
        try:
            out.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"--reward {item!r} is invalid: expected NAME or NAME=WEIGHT") from None
    return tuple(out)


# Config fields with their own flags (``--set`` names them to the flag).
RESERVED = {"task": "--task", "stop_exact_match": "--stop-exact-match",
             "task_args": "--task-arg", "steps": "--steps", "seed": "--seed",
             "rewards": "--reward", "loss": "--loss", "beta": "--beta",
             "group_size": "--group-size", "estimator": "--estimator"}


def check_settings(config_cls, args, owner: str) -> None:
    """Rejects bad ``--set``, ``--task-arg`` and ``--reward`` values before anything loads."""
    from purejaxpo.lm.tasks import make_task

    parse_settings(args.set, config_cls, owner, RESERVED)
    if args.task or (args.task_arg and not getattr(args, "model", None)):
        # The task the options apply to: --task, else the --init policy's (its policy.json,
        # read without loading the weights), else the default.
        make_task(args.task or init_task(getattr(args, "init", None)),
                  **task_options(args.task_arg))
    reward_weights(getattr(args, "reward", None))


def init_task(init: str | None) -> str:
    """The task of the policy folder ``init`` (``addition`` when there is none to read)."""
    import json
    import os

    path = os.path.join(init or "", "policy.json")
    if init and os.path.isfile(path):
        try:
            with open(path) as f:
                return json.load(f).get("task", "addition")
        except (OSError, ValueError):
            pass
    return "addition"


def make_config(config_cls, args, owner: str, policy=None, **fixed):
    """The validated config from ``--set``/flags; the task and its options default to the
    ``policy``'s (the one training starts from). A data task's rewards default to
    ``correct=1 contains=0.5``."""
    values = parse_settings(args.set, config_cls, owner, RESERVED)
    values.update({k: v for k, v in fixed.items() if v is not None})
    task = args.task or (policy.task if policy else "addition")
    task_args = task_options(args.task_arg)
    if policy is not None and task == policy.task:  # the policy's options, updated
        task_args = {**dict(policy.task_args), **task_args}
    if (task == "jsonl" and "rewards" in {f.name for f in dataclasses.fields(config_cls)}
            and values.get("rewards") is None):
        values["rewards"] = DATA_REWARDS
    return config_cls(task=task, task_args=task_args, seed=args.seed, **values)


DATA_REWARDS = (("correct", 1.0), ("contains", 0.5))
"""The rewards of a run on ``--data`` unless ``--reward`` says otherwise."""


class Start(NamedTuple):
    """Where a trainer starts: a policy folder (``--init``) or a pretrained Hugging Face
    checkpoint (``--model``, with LoRA adapters unless ``--lora-rank 0``)."""

    params: Any
    model: Any
    task: str
    task_args: dict[str, Any]
    pretrained: Any = None  # the lm.pretrained.Pretrained it came from, for --model


def load_start(args, *, data: str | None = None, adapters: bool = True) -> Start:
    """The starting policy from ``--init`` or ``--model`` (checked: exactly one), the task
    defaulting to ``data`` (a JSON-lines file, tokenized by the model's tokenizer) for a
    pretrained model, with LoRA adapters per the flags unless ``adapters`` is False."""
    import os

    if getattr(args, "model", None) is None:
        if data is not None:
            raise ValueError("--data is for a pretrained --model (a policy from --init has "
                             "its own task: --task)")
        policy = load_init(args)
        return Start(policy.params, policy.model, policy.task, dict(policy.task_args))
    import jax

    from purejaxpo.lm.lora import add_adapters
    from purejaxpo.lm.pretrained import load_pretrained

    if args.task and args.task != "jsonl":
        raise ValueError(f"--task {args.task!r} is invalid with --model: a pretrained model "
                         "trains on prompts from --data FILE.jsonl")
    if data is None:
        raise ValueError("--model needs --data FILE.jsonl (one {\"prompt\": ..., \"answer\": "
                         "...} object per line)")
    check_lora(args)
    pre = load_pretrained(args.model)
    params, model = pre.params, pre.model
    if args.lora_rank and adapters:
        model, params = add_adapters(jax.random.PRNGKey(args.seed), params, model,
                                     rank=args.lora_rank, alpha=args.lora_alpha,
                                     targets=tuple(args.lora_targets.split(",")))
    task_args = {"path": os.path.abspath(data), "model": os.path.abspath(args.model)}
    return Start(params, model, "jsonl", task_args, pre)


def check_lora(args) -> None:
    from purejaxpo.lm.lora import TARGETS

    if args.lora_rank < 0:
        raise ValueError(f"--lora-rank={args.lora_rank} is invalid: must be >= 0 (0: train "
                         "every weight)")
    if not args.lora_alpha > 0:
        raise ValueError(f"--lora-alpha={args.lora_alpha} is invalid: must be > 0")
    bad = [t for t in args.lora_targets.split(",") if t not in TARGETS]
    if bad:
        raise ValueError(f"--lora-targets={args.lora_targets!r} is invalid: {bad} are not in "
                         f"{','.join(TARGETS)}")


def user_rewards(config, start: Start) -> dict[str, Any]:
    """The ``module:function`` rewards of ``config`` as text rewards on the task's
    tokenizer."""
    from purejaxpo.lm.tasks.prompt_data import load_reward

    tokenizer = config.make_task().tokenizer
    return {name: load_reward(name, tokenizer) for name, _ in config.rewards if ":" in name}


def save_result(args, kind: str, params, start: Start, config, out: dict) -> None:
    """``--out``: a policy folder, or for a pretrained model a Hugging Face checkpoint with the
    adapters merged (``tokenizer.json`` copied), which ``--model`` and other tools open."""
    from purejaxpo.lm.checkpoint import save_policy

    if start.pretrained is not None:
        from purejaxpo.lm.lora import merge_adapters
        from purejaxpo.lm.pretrained import save_pretrained

        merged, model = merge_adapters(params, start.model)
        save_pretrained(args.out, merged, model, start.pretrained.hf_config,
                        tokenizer=start.pretrained.tokenizer)
        print(f"saved the model (adapters merged) to {args.out} (Hugging Face format)")
        return
    save_policy(args.out, params, start.model, task=config.task,
                task_args=dict(config.task_args),
                meta={k: out[k] for k in ("command", "exact_match_after", "steps", "config")})
    print(f"saved policy to {args.out}")


def warn_if_diverged(fit) -> None:
    from purejaxpo.lm.common import divergence_warning

    warning = divergence_warning(fit.diverged_at_step)
    if warning:
        print(warning, file=sys.stderr)


def per_second(amount: float, seconds: float) -> float | None:
    """A throughput; None when nothing ran (e.g. resuming a finished run)."""
    return amount / seconds if seconds > 0 else None


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "nan" if x is None else format(x, spec)


def report(args, kind: str, config, result, tokens: float, extra: dict[str, Any]) -> dict:
    """Prints the one-line result (and any divergence warning); writes ``--json``."""
    from purejaxpo.settings import json_safe

    out = json_safe({
        "command": f"lm {kind}",
        "task": config.task,
        **result.summary(),
        "tokens_per_s": per_second(tokens, result.run_s),
        "device": device_description(),
        "config": config.to_dict(),
        **extra,
    })
    print(f"{kind} {config.task}: held-out greedy exact match "
          f"{fmt(out['exact_match_before'])} -> {fmt(out['exact_match_after'])} "
          f"({config.make_task().heldout_size(config.eval_prompts)} prompts) | "
          f"{out['steps']} steps in {result.run_s:.1f} s, "
          f"{fmt(out['tokens_per_s'], ',.0f')} tokens/s | {out['device']}")
    warn_if_diverged(result)
    if args.json:
        write_json(args.json, out)
    return out


def load_init(args):
    from purejaxpo.lm.checkpoint import load_policy

    policy = load_policy(args.init)
    if args.task and policy.task != args.task:
        print(f"note: {args.init} was trained on task {policy.task!r}; using --task {args.task!r}",
              file=sys.stderr)
    return policy


def adapter_info(start: Start) -> dict[str, Any]:
    """Trained / total parameters (the JSON's ``trained_params``, ``params``)."""
    from purejaxpo.lm.lora import count_adapter_params, has_adapters

    adapters, total = count_adapter_params(start.params)
    return {"params": total, "trained_params": adapters if has_adapters(start.params) else total}


def reporting_errors(fn):
    """Bad input (``ValueError``, raised before anything compiles) prints ``error: ...`` and
    returns 2, as ``purejaxpo train`` does."""
    import functools

    @functools.wraps(fn)
    def run(args) -> int:
        tools = getattr(args, "tools", None)
        if tools is not None:  # --tools NAME is the task option tools=NAME ('none': off)
            args.task_arg = (args.task_arg or []) + [
                f"tools={'' if tools == 'none' else tools}"]
        try:
            return fn(args)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return run


def add_common_flags(p, *, init: bool, data: bool = True):
    p.add_argument("--task", default=None,
                   help="addition, sorting or multiply (default: the --init policy's task, "
                        "else addition)")
    p.add_argument("--task-arg", action="append", metavar="NAME=VALUE",
                   help="task option, e.g. --task-arg digits=4 (repeatable)")
    p.add_argument("--tools", default=None, metavar="NAME",
                   help="tools the policy may call while sampling (tasks that take them: "
                        "multiply): calculator, or none to switch off an --init policy's")
    if init:
        start = p.add_mutually_exclusive_group(required=True)
        start.add_argument("--init", metavar="DIR",
                           help="a policy folder written by `lm sft --out` (or `lm grpo --out`)")
        start.add_argument("--model", metavar="HF_DIR",
                           help="a pretrained Hugging Face-format checkpoint (Llama, Qwen2: "
                                "config.json, *.safetensors, tokenizer.json)")
        if data:
            p.add_argument("--data", metavar="FILE.jsonl", default=None,
                           help="prompts and answers for --model, one {\"prompt\": ..., "
                                "\"answer\": ...} per line (the last tenth held out)")
        p.add_argument("--lora-rank", type=int, default=8,
                       help="LoRA adapters of this rank on a --model (default 8; 0 trains "
                            "every weight)")
        p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
        p.add_argument("--lora-targets", default="q,k,v,attn_out",
                       help="projections that get adapters (default q,k,v,attn_out; also "
                            "mlp_gate, mlp_in, mlp_out)")
    p.add_argument("--json", metavar="PATH", help="write the results and full config here")


def add_trainer_flags(p):
    p.add_argument("--steps", type=int, default=None, help="training steps")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any config field, e.g. --set learning_rate=3e-4 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="save the trained policy here")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    from purejaxpo.cli.flags import add_checkpoint_args

    add_checkpoint_args(p, what="the training state (parameters, optimiser state, reference, "
                               "PRNG key, step, metrics)",
                        every="steps between checkpoints (and held-out evaluations; default: "
                              "the config's log_every)")


def checkpoint_options(args) -> dict[str, Any]:
    """The trainers' checkpoint arguments, from the flags (checked first: a ``ValueError``
    naming the flag, before anything loads or compiles)."""
    from purejaxpo.cli.flags import check_checkpoint_args

    check_checkpoint_args(args)
    return {"checkpoint_dir": args.checkpoint_dir, "resume": args.resume,
            "checkpoint_every": args.checkpoint_every}


def add_rl_flags(p, beta_help: str) -> None:
    """The flags ``lm grpo`` and ``lm ppo`` share (sampling, loss variant, rewards)."""
    from purejaxpo.lm.config import LOSS_PRESETS

    p.add_argument("--group-size", type=int, default=None, help="completions per prompt")
    p.add_argument("--loss", default=None, choices=list(LOSS_PRESETS),
                   help="loss variant (default grpo: its ratio and clipping)")
    p.add_argument("--beta", type=float, default=None, help=beta_help)
    p.add_argument("--reward", action="append", metavar="NAME=WEIGHT",
                   help="reward function and weight (repeatable; default correct=1 digits=0.5, "
                        "with --data correct=1 contains=0.5); NAME may be module:function or "
                        "file.py:function, fn(prompt, completion, answer) -> float on strings")
    p.add_argument("--reward-model", metavar="DIR", default=None,
                   help="a reward model from `lm rm --out DIR`, as reward 'rm' (weight 1 "
                        "unless --reward rm=W)")
