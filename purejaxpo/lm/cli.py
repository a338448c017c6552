"""``purejaxpo lm ...``: supervised fine-tuning, GRPO, DPO and evaluation of sequence policies.

    purejaxpo lm sft  --task addition --steps 300 --out runs/sft [--json sft.json]
    purejaxpo lm grpo --task addition --init runs/sft --steps 600 [--group-size 8]
                      [--loss grpo|bnpo|dr_grpo|dapo|gspo] [--estimator grpo|rloo|reinforce_pp]
                      [--beta 0.04] [--set name=value]
                      [--reward correct=1 --reward digits=0.5] [--out runs/grpo] [--json grpo.json]
    purejaxpo lm ppo  --task addition --init runs/sft --steps 600 [--set kl_coef=0.01]
                      [--reward-model DIR] [--out runs/ppo] [--json ppo.json]
    purejaxpo lm dpo  --task addition --init runs/sft [--loss rpo|sigmoid|...] [--beta B]
                      [--pairs FILE.jsonl] [--steps N] [--out DIR] [--json PATH]
    purejaxpo lm rm   --task addition [--init runs/sft] [--steps N] [--out DIR] [--json PATH]
    purejaxpo lm eval --task addition --init runs/grpo [--json eval.json]
    purejaxpo lm generate --model HF_DIR --prompt "12+34=" [--max-new-tokens 32] [--temperature T]

A pretrained Hugging Face-format model (Llama, Qwen2) takes the place of ``--init`` with
``--model DIR`` and trains LoRA adapters by default (``--lora-rank 8``; 0 trains every
weight), on prompts and answers from ``--data FILE.jsonl`` (``{"prompt": ..., "answer": ...}``
per line; :mod:`purejaxpo.envs.prompt_data`), with rewards ``correct``, ``contains``,
``prefix``, ``tokens`` or a Python function on strings (``--reward mymodule:fn=0.5``,
``fn(prompt, completion, answer) -> float``); ``--out DIR`` then writes a Hugging Face
checkpoint with the adapters merged:

    purejaxpo lm grpo --model HF_DIR --data train.jsonl --lora-rank 8 --steps 200 --out tuned
    purejaxpo lm dpo  --model HF_DIR --pairs prefs.jsonl --out tuned
    purejaxpo lm eval --model tuned --data train.jsonl

Every trainer also takes ``--checkpoint-dir DIR [--checkpoint-every N] [--resume]``: the whole
training state is saved every N steps, and a killed run resumed with ``--resume`` ends bitwise
where the uninterrupted one does.

Every trainer prints held-out greedy exact match before and after (a fixed set of prompts that
training never samples on purpose), the run time and the throughput, and with ``--json``
writes them with the full config and the curves. A run whose loss or parameters become
non-finite prints a warning naming the first such step, and its JSON says so (``diverged``,
``diverged_at_step``); scores after it are null. ``lm dpo --help`` lists the losses.

This module only parses arguments, calls the library (:mod:`purejaxpo.lm`) and prints.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, NamedTuple

from purejaxpo.settings import device_description, parse_settings, write_json


def _task_args(items) -> dict[str, Any]:
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


def _rewards(items) -> tuple[tuple[str, float], ...] | None:
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
_RESERVED = {"task": "--task", "stop_exact_match": "--stop-exact-match",
             "task_args": "--task-arg", "steps": "--steps", "seed": "--seed",
             "rewards": "--reward", "loss": "--loss", "beta": "--beta",
             "group_size": "--group-size", "estimator": "--estimator"}


def _check_settings(config_cls, args, owner: str) -> None:
    """Rejects bad ``--set``, ``--task-arg`` and ``--reward`` values before anything loads."""
    from purejaxpo.envs.tasks import make_task

    parse_settings(args.set, config_cls, owner, _RESERVED)
    if args.task or (args.task_arg and not getattr(args, "model", None)):
        # The task the options apply to: --task, else the --init policy's (its policy.json,
        # read without loading the weights), else the default.
        make_task(args.task or _init_task(getattr(args, "init", None)),
                  **_task_args(args.task_arg))
    _rewards(getattr(args, "reward", None))


def _init_task(init: str | None) -> str:
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


def _config(config_cls, args, owner: str, policy=None, **fixed):
    """The validated config from ``--set``/flags; the task and its options default to the
    ``policy``'s (the one training starts from). A data task's rewards default to
    ``correct=1 contains=0.5``."""
    values = parse_settings(args.set, config_cls, owner, _RESERVED)
    values.update({k: v for k, v in fixed.items() if v is not None})
    task = args.task or (policy.task if policy else "addition")
    task_args = _task_args(args.task_arg)
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


def _load_start(args, *, data: str | None = None, adapters: bool = True) -> Start:
    """The starting policy from ``--init`` or ``--model`` (checked: exactly one), the task
    defaulting to ``data`` (a JSON-lines file, tokenized by the model's tokenizer) for a
    pretrained model, with LoRA adapters per the flags unless ``adapters`` is False."""
    import os

    if getattr(args, "model", None) is None:
        if data is not None:
            raise ValueError("--data is for a pretrained --model (a policy from --init has "
                             "its own task: --task)")
        policy = _load_init(args)
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
    _check_lora(args)
    pre = load_pretrained(args.model)
    params, model = pre.params, pre.model
    if args.lora_rank and adapters:
        model, params = add_adapters(jax.random.PRNGKey(args.seed), params, model,
                                     rank=args.lora_rank, alpha=args.lora_alpha,
                                     targets=tuple(args.lora_targets.split(",")))
    task_args = {"path": os.path.abspath(data), "model": os.path.abspath(args.model)}
    return Start(params, model, "jsonl", task_args, pre)


def _check_lora(args) -> None:
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


def _user_rewards(config, start: Start) -> dict[str, Any]:
    """The ``module:function`` rewards of ``config`` as text rewards on the task's
    tokenizer."""
    from purejaxpo.envs.prompt_data import load_reward

    tokenizer = config.make_task().tokenizer
    return {name: load_reward(name, tokenizer) for name, _ in config.rewards if ":" in name}


def _save(args, kind: str, params, start: Start, config, out: dict) -> None:
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


def _warn_if_diverged(fit) -> None:
    from purejaxpo.lm.common import divergence_warning

    warning = divergence_warning(fit.diverged_at_step)
    if warning:
        print(warning, file=sys.stderr)


def _per_s(amount: float, seconds: float) -> float | None:
    """A throughput; None when nothing ran (e.g. resuming a finished run)."""
    return amount / seconds if seconds > 0 else None


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "nan" if x is None else format(x, spec)


def _report(args, kind: str, config, result, tokens: float, extra: dict[str, Any]) -> dict:
    """Prints the one-line result (and any divergence warning); writes ``--json``."""
    from purejaxpo.settings import json_safe

    out = json_safe({
        "command": f"lm {kind}",
        "task": config.task,
        **result.summary(),
        "tokens_per_s": _per_s(tokens, result.run_s),
        "device": device_description(),
        "config": config.to_dict(),
        **extra,
    })
    print(f"{kind} {config.task}: held-out greedy exact match "
          f"{_fmt(out['exact_match_before'])} -> {_fmt(out['exact_match_after'])} "
          f"({config.make_task().heldout_size(config.eval_prompts)} prompts) | "
          f"{out['steps']} steps in {result.run_s:.1f} s, "
          f"{_fmt(out['tokens_per_s'], ',.0f')} tokens/s | {out['device']}")
    _warn_if_diverged(result)
    if args.json:
        write_json(args.json, out)
    return out


def cmd_sft(args) -> int:
    from purejaxpo.lm.checkpoint import save_policy
    from purejaxpo.lm.config import LMSFTConfig
    from purejaxpo.lm.model import count_params
    from purejaxpo.lm.sft import train_sft

    config = _config(LMSFTConfig, args, "lm sft", steps=args.steps,
                     stop_exact_match=args.stop_exact_match)
    result = train_sft(config, progress=args.progress, **_checkpointing(args))
    model = config.model_config()
    tokens = result.run_total("tokens")
    out = _report(args, "sft", config, result, tokens,
                  {"params": count_params(result.state.params), "model": model.to_dict(),
                   "tokens_kind": "trained answer tokens"})
    if args.out:
        save_policy(args.out, result.state.params, model, task=config.task,
                    task_args=dict(config.task_args),
                    meta={k: out[k] for k in ("command", "exact_match_after", "steps", "config")})
        print(f"saved policy to {args.out}")
    return 0


def _load_init(args):
    from purejaxpo.lm.checkpoint import load_policy

    policy = load_policy(args.init)
    if args.task and policy.task != args.task:
        print(f"note: {args.init} was trained on task {policy.task!r}; using --task {args.task!r}",
              file=sys.stderr)
    return policy


def cmd_grpo(args) -> int:
    from purejaxpo.lm.config import LMGRPOConfig
    from purejaxpo.lm.grpo import train_grpo

    return _rl_command(args, "grpo", LMGRPOConfig, train_grpo, estimator=args.estimator)


def cmd_ppo(args) -> int:
    from purejaxpo.lm.config import LMPPOConfig
    from purejaxpo.lm.ppo import train_ppo

    return _rl_command(args, "ppo", LMPPOConfig, train_ppo)


def _rl_command(args, kind: str, config_cls, train, **fixed) -> int:
    """``lm grpo`` and ``lm ppo``: from an ``--init`` policy or a ``--model``, with the task's
    rewards, user text rewards and an optional ``--reward-model``; prints, writes ``--json``,
    saves ``--out``."""
    _check_settings(config_cls, args, f"lm {kind}")
    checkpointing = _checkpointing(args)
    policy = _load_start(args, data=args.data)
    config = _config(config_cls, args, f"lm {kind}", policy, steps=args.steps, loss=args.loss,
                     beta=args.beta, group_size=args.group_size, rewards=_rewards(args.reward),
                     **fixed)
    extra = _user_rewards(config, policy) or None
    if args.reward_model:
        from purejaxpo.lm.checkpoint import load_policy
        from purejaxpo.lm.reward_model import reward_function

        rm = load_policy(args.reward_model, kind="reward_model")
        extra = {**(extra or {}), "rm": reward_function(rm.params, rm.model)}
        if not any(name == "rm" for name, _ in config.rewards):
            config = config.replace(rewards=config.rewards + (("rm", 1.0),))
    result = train(config, policy.params, policy.model, extra_rewards=extra,
                   progress=args.progress, **checkpointing)
    tokens = result.run_total("completion_tokens")
    out = _report(args, kind, config, result, tokens,
                  {"init": args.init or args.model, "reward_model": args.reward_model,
                   "tokens_kind": "generated completion tokens", **_adapter_info(policy)})
    if args.out:
        params = result.state.params
        _save(args, kind, params["policy"] if kind == "ppo" else params, policy, config, out)
    return 0


def _adapter_info(start: Start) -> dict[str, Any]:
    """Trained / total parameters (the JSON's ``trained_params``, ``params``)."""
    from purejaxpo.lm.lora import count_adapter_params, has_adapters

    adapters, total = count_adapter_params(start.params)
    return {"params": total, "trained_params": adapters if has_adapters(start.params) else total}


def cmd_eval(args) -> int:
    import math
    import time

    import numpy as np

    from purejaxpo.envs.tasks import make_task
    from purejaxpo.lm.common import greedy_completions, make_evaluator
    from purejaxpo.settings import json_safe

    policy = _load_start(args, data=args.data, adapters=False)
    name = args.task or policy.task
    task = make_task(name, **{**(policy.task_args if name == policy.task else {}),
                              **_task_args(args.task_arg)})
    evaluate = make_evaluator(policy.model, task, args.num_prompts)
    start = time.perf_counter()
    em = evaluate(policy.params)
    batch = task.heldout(args.num_prompts)
    num = int(batch.prompts.shape[0])
    out = {"command": "lm eval", "task": name, "init": args.init or args.model,
           "exact_match": em, "num_prompts": num, "eval_s": time.perf_counter() - start,
           "device": device_description()}
    print(f"eval {name}: held-out greedy exact match {em:.3f} ({num} prompts)")
    if math.isnan(em):
        print(f"warning: {args.init or args.model} holds non-finite parameters (a diverged "
              "run); its exact match is reported as NaN", file=sys.stderr)
    completions = greedy_completions(policy.params, policy.model, task, batch)
    if completions.calls is not None:
        from purejaxpo.lm.grpo import tool_metrics

        exact = task.exact_match(batch, completions.tokens, completions.mask)
        out["tools"] = {k.split("/")[1]: float(v)
                        for k, v in tool_metrics(completions, exact).items()}
        t = out["tools"]
        print(f"  tool calls per completion {t['calls']:.2f} (malformed {t['malformed_rate']:.1%}"
              f"), used in {t['used']:.1%}; exact match with a call {t['exact_with']:.3f}, "
              f"without {t['exact_without']:.3f}")
    out["examples"] = task.decode_batch(batch, np.asarray(completions.tokens),
                                        limit=args.examples)
    for line in out["examples"]:
        print("  " + line)
    if args.json:
        write_json(args.json, json_safe(out))
    return 0


def cmd_generate(args) -> int:
    """``lm generate``: a Hugging Face-format checkpoint's continuation of text prompts."""
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from purejaxpo.lm.pretrained import load_pretrained
    from purejaxpo.lm.sampling import generate

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens={args.max_new_tokens} is invalid: must be >= 1")
    if not args.temperature > 0:
        raise ValueError(f"--temperature={args.temperature} is invalid: must be > 0")
    from purejaxpo.envs.prompt_data import TokenizerFile

    pre = load_pretrained(args.model)
    tok = TokenizerFile(args.model)  # the checkpoint's tokenizer with its EOS and pad ids
    encoded = [tok.encode_prompt(p) for p in args.prompt]
    width = max(len(ids) for ids in encoded)
    if width + args.max_new_tokens > pre.model.max_len:
        raise ValueError(f"--max-new-tokens={args.max_new_tokens}: the longest prompt ({width} "
                         f"tokens) plus the completion exceeds the model's context "
                         f"{pre.model.max_len}")
    prompts = np.zeros((len(encoded), width), np.int32)
    valid = np.zeros((len(encoded), width), bool)
    for i, ids in enumerate(encoded):  # left-padded
        prompts[i, width - len(ids):], valid[i, width - len(ids):] = ids, True
    start = time.perf_counter()
    out = jax.jit(lambda p, x, v, key: generate(
        key, p, pre.model, x, v, max_new_tokens=args.max_new_tokens,
        eos_id=tok.eos_id, pad_id=tok.pad_id, temperature=args.temperature,
        greedy=args.greedy))(pre.params, jnp.asarray(prompts), jnp.asarray(valid),
                             jax.random.PRNGKey(args.seed))
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    seconds = time.perf_counter() - start
    results = []
    for prompt, row, keep in zip(args.prompt, tokens, mask):
        text = tok.decode(row[keep].tolist())
        results.append({"prompt": prompt, "completion": text, "tokens": row[keep].tolist()})
        print(f"{prompt!r} -> {text!r}")
    print(f"{int(mask.sum())} tokens in {seconds:.2f} s (compilation included) | "
          f"{device_description()}")
    if args.json:
        write_json(args.json, {"command": "lm generate", "model": args.model,
                               "greedy": args.greedy, "results": results,
                               "device": device_description()})
    return 0


def _reporting_errors(fn):
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


def _common(p, *, init: bool, data: bool = True):
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


def _trainer(p):
    p.add_argument("--steps", type=int, default=None, help="training steps")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any config field, e.g. --set learning_rate=3e-4 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="save the trained policy here")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    from purejaxpo.checkpoint_flags import add_checkpoint_args

    add_checkpoint_args(p, what="the training state (parameters, optimiser state, reference, "
                               "PRNG key, step, metrics)",
                        every="steps between checkpoints (and held-out evaluations; default: "
                              "the config's log_every)")


def _checkpointing(args) -> dict[str, Any]:
    """The trainers' checkpoint arguments, from the flags (checked first: a ``ValueError``
    naming the flag, before anything loads or compiles)."""
    from purejaxpo.checkpoint_flags import check_checkpoint_args

    check_checkpoint_args(args)
    return {"checkpoint_dir": args.checkpoint_dir, "resume": args.resume,
            "checkpoint_every": args.checkpoint_every}


def _rl_flags(p, beta_help: str) -> None:
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


def add_cli_parser(sub) -> None:
    from purejaxpo.lm.config import ADVANTAGE_ESTIMATORS

    lm = sub.add_parser("lm", help="language-model policies: sft, grpo, ppo, dpo, rm, eval, "
                        "generate",
                        description=__doc__.split("\n\n")[0])
    lm_sub = lm.add_subparsers(dest="lm_command", required=True)

    sft = lm_sub.add_parser("sft", help="supervised fine-tuning from random weights")
    _common(sft, init=False)
    _trainer(sft)
    sft.add_argument("--stop-exact-match", type=float, default=None, metavar="X",
                     help="stop early once greedy exact match on validation prompts reaches X "
                          "(e.g. 0.3 for a partly trained starting policy for RL)")
    sft.set_defaults(func=_reporting_errors(cmd_sft))

    grpo = lm_sub.add_parser("grpo", help="GRPO / Dr. GRPO / BNPO / DAPO / GSPO from a policy")
    _common(grpo, init=True)
    _trainer(grpo)
    _rl_flags(grpo, "k3 KL coefficient to the initial policy (default 0: no reference)")
    grpo.add_argument("--estimator", default=None, choices=list(ADVANTAGE_ESTIMATORS),
                      help="advantage estimator (default grpo): "
                           + "; ".join(f"{name}: {spec.description}"
                                       for name, spec in ADVANTAGE_ESTIMATORS.items())
                           + ". REINFORCE++'s KL coefficient: --set kl_coef=0.001")
    grpo.set_defaults(func=_reporting_errors(cmd_grpo))

    ppo = lm_sub.add_parser("ppo", help="PPO with a value head (critic) from a policy")
    _common(ppo, init=True)
    _trainer(ppo)
    _rl_flags(ppo, "k3 KL coefficient in the loss (default 0; the reward already has a per-token "
                   "KL penalty, --set kl_coef=0.01)")
    ppo.set_defaults(func=_reporting_errors(cmd_ppo))

    rm = lm_sub.add_parser("rm", help="Bradley-Terry reward model on preference pairs")
    _common(rm, init=False)
    _trainer(rm)
    rm.add_argument("--init", metavar="DIR", default=None,
                    help="start the reward model's trunk from this policy (recommended)")
    rm.set_defaults(func=_reporting_errors(cmd_rm))

    ev = lm_sub.add_parser("eval", help="held-out greedy exact match of a saved policy")
    _common(ev, init=True)
    ev.add_argument("--num-prompts", type=int, default=512, help="held-out prompts (default 512)")
    ev.add_argument("--examples", type=int, default=5, help="example completions to print")
    ev.add_argument("--no-progress", dest="progress", action="store_false",
                    help="accepted for symmetry with the trainers (eval shows no progress bar)")
    ev.set_defaults(func=_reporting_errors(cmd_eval))

    gen = lm_sub.add_parser("generate", help="continue text prompts with a Hugging Face-format "
                            "checkpoint (Llama, Qwen2)")
    gen.add_argument("--model", required=True, metavar="DIR",
                     help="config.json, *.safetensors and tokenizer.json")
    gen.add_argument("--prompt", action="append", required=True,
                     help="a prompt (repeatable: one batch)")
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--greedy", action="store_true", help="most likely token at every step")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0, help="sampling PRNG seed")
    gen.add_argument("--json", metavar="PATH", help="write the completions here")
    gen.set_defaults(func=_reporting_errors(cmd_generate))

    add_dpo_parser(lm_sub)


def cmd_rm(args) -> int:
    from purejaxpo.lm.checkpoint import load_policy, save_policy
    from purejaxpo.lm.config import LMRewardModelConfig
    from purejaxpo.lm.pairs import preference_data
    from purejaxpo.lm.reward_model import train_reward_model

    _check_settings(LMRewardModelConfig, args, "lm rm")
    checkpointing = _checkpointing(args)
    policy = load_policy(args.init) if args.init else None
    config = _config(LMRewardModelConfig, args, "lm rm", policy, steps=args.steps)
    init = (policy.params, policy.model) if policy else None
    data = preference_data(config, config.make_task(), policy=init)
    result = train_reward_model(config, data.train, data.heldout, init_policy=init,
                                progress=args.progress, **checkpointing)
    fit = result.fit
    summary = fit.summary("ranking_accuracy")
    out = {"command": "lm rm", "task": config.task, "init": args.init, **summary,
           "pairs_per_s": _per_s(config.batch_size * fit.steps_run, fit.run_s),
           "device": device_description(), "config": config.to_dict()}
    print(f"rm {config.task}: held-out ranking accuracy "
          f"{_fmt(out['ranking_accuracy_before'])} -> {_fmt(out['ranking_accuracy_after'])} "
          f"({config.eval_pairs} pairs) | {out['steps']} steps in {out['run_s']:.1f} s | "
          f"{out['device']}")
    _warn_if_diverged(fit)
    if args.json:
        write_json(args.json, out)
    if args.out:
        save_policy(args.out, result.params, result.model, task=config.task,
                    task_args=dict(config.task_args), kind="reward_model",
                    meta={k: out[k] for k in ("command", "ranking_accuracy_after", "config")})
        print(f"saved reward model to {args.out}")
    return 0


def cmd_dpo(args) -> int:
    from purejaxpo.lm.config import LMDPOConfig
    from purejaxpo.lm.dpo import train_dpo
    from purejaxpo.lm.pairs import preference_data

    _check_settings(LMDPOConfig, args, "lm dpo")
    checkpointing = _checkpointing(args)
    if args.model and not args.pairs:
        raise ValueError("--model needs --pairs FILE.jsonl (prompt/chosen/rejected per line)")
    policy = _load_start(args, data=args.pairs if args.model else None)
    config = _config(LMDPOConfig, args, "lm dpo", policy, steps=args.steps, loss=args.loss,
                     beta=args.beta)
    data = preference_data(config, config.make_task(), policy=(policy.params, policy.model),
                           path=args.pairs)
    result = train_dpo(config, policy.params, policy.model, data.train, data.heldout,
                       progress=args.progress, **checkpointing)
    extra = {
        "init": args.init or args.model,
        **_adapter_info(policy),
        "pairs": data.source,
        **result.preference_summary(),
        "pairs_per_s": _per_s(config.batch_size * result.fit.steps_run,
                              result.fit.run_s),
        "tokens_kind": "completion tokens through the policy (chosen + rejected; kto: completion + mismatched)",
    }
    tokens = result.fit.run_total("tokens")
    out = _report(args, f"dpo[{config.loss}]", config, result.fit, tokens, extra)
    print(f"  held-out preference accuracy {_fmt(extra['pref_accuracy_before'])} -> "
          f"{_fmt(extra['pref_accuracy'])}; log-prob change: chosen "
          f"{_fmt(extra['chosen_logp_delta'], '+.2f')}, rejected "
          f"{_fmt(extra['rejected_logp_delta'], '+.2f')}")
    if args.out:
        _save(args, "dpo", result.fit.state.params, policy, config, out)
    return 0


def add_dpo_parser(lm_sub) -> None:
    import argparse

    from purejaxpo.lm.config import PREFERENCE_LOSSES, LMDPOConfig, describe_preference_losses

    default = LMDPOConfig.loss
    dpo = lm_sub.add_parser(
        "dpo", help=f"preference optimisation ({', '.join(PREFERENCE_LOSSES)})",
        epilog="losses (--loss NAME; default beta; what it is; when to use it):\n"
               + describe_preference_losses(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(dpo, init=True, data=False)
    _trainer(dpo)
    dpo.add_argument("--loss", default=None, choices=list(PREFERENCE_LOSSES),
                     help=f"loss (default {default}: DPO plus the chosen answers' NLL, "
                          "weighted by --set rpo_alpha=1.0, which keeps a good policy good; "
                          "--loss sigmoid is plain DPO; all listed below)")
    dpo.add_argument("--beta", type=float, default=None,
                     help="the loss's coefficient (default per loss: "
                          + ", ".join(f"{name} {spec.beta}"
                                      for name, spec in PREFERENCE_LOSSES.items()) + ")")
    dpo.add_argument("--pairs", metavar="FILE.jsonl", default=None,
                     help="preference data: prompt/chosen/rejected (or prompt/completion/label "
                          "for unpaired losses: "
                          + ", ".join(n for n, s in PREFERENCE_LOSSES.items() if not s.paired)
                          + ") per line; default: generated from the task")
    dpo.set_defaults(func=_reporting_errors(cmd_dpo))
