"""``purejaxpo sweep``: a hyperparameter sweep x seeds from the command line.

    purejaxpo sweep ppo --env CartPole-v1 --grid lr=1e-4,3e-4,1e-3 --grid clip_eps=0.1,0.2 --seeds 8
    purejaxpo sweep ppo --random 32 --range lr=1e-5:1e-2:log --range ent_coef=0:0.02 --seeds 4
    purejaxpo sweep lm-sft --task sorting --steps 300 --grid lr=1e-3,3e-3 --seeds 2
    purejaxpo sweep lm-grpo --init runs/lm/sft --steps 200 --grid lr=1e-4,3e-4 --seeds 2

The language-model trainers (``lm-sft``, ``lm-grpo``, ``lm-ppo``, ``lm-dpo``) are swept the
same way; their score is held-out greedy exact match at the end of each run (``--log-every``:
steps between the in-program evaluations of the curve).
"""

from __future__ import annotations

import os
import sys
import typing
from typing import Sequence

from purejaxpo.backends.cpu import add_cpu_args, parse_cpu_devices, use_cpu_cores
from purejaxpo.settings import device_description, field_types, parse_value, resolve_name, write_json
from purejaxpo.sweep import Range, best, plan_sweep, run_plan, summary


def _named_items(items: Sequence[str], flag: str, expected: str, config_cls):
    """``(field, value text)`` for each ``name=text`` item of ``flag``; ValueError names the
    flag for a missing ``=``, an unknown name or a field given twice."""
    seen = set()
    for item in items:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r} is invalid: expected {expected}")
        name, text = item.split("=", 1)
        field = resolve_name(name, config_cls)
        if field in seen:
            raise ValueError(f"{flag} {field}: given twice")
        seen.add(field)
        yield field, text


def parse_grid(items: Sequence[str], config_cls) -> dict[str, list]:
    """``["lr=1e-4,3e-4", "hidden_sizes=64,64/128,128"]`` -> ``{field: [values]}``.

    Values are separated by commas; for list-valued fields (``hidden_sizes``) by ``/``.
    """
    types_ = field_types(config_cls)
    grid: dict[str, list] = {}
    for field, text in _named_items(items, "--grid", "name=v1,v2,...", config_cls):
        annotation = types_[field]
        is_tuple = typing.get_origin(annotation) is tuple
        parts = [p for p in text.split("/" if is_tuple else ",") if p.strip()]
        if not parts:
            raise ValueError(f"--grid {field}: no values given")
        grid[field] = [parse_value(field, p.strip(), annotation) for p in parts]
    return grid


def parse_range(items: Sequence[str], config_cls) -> dict[str, Range]:
    """``["lr=1e-5:1e-2:log", "ent_coef=0:0.02"]`` -> ``{field: Range}``."""
    ranges: dict[str, Range] = {}
    for field, text in _named_items(items, "--range", "name=low:high[:log]", config_cls):
        parts = text.split(":")
        scale = parts[2].strip().lower() if len(parts) == 3 else "uniform"
        if len(parts) not in (2, 3) or scale not in ("log", "uniform"):
            raise ValueError(f"--range {field}={text!r} is invalid: expected low:high, "
                             "low:high:log or low:high:uniform")
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"--range {field}={text!r} is invalid: low and high must be "
                             "numbers") from None
        ranges[field] = Range(low, high, scale == "log")
    return ranges


_LM_ONLY = ("init", "task", "task_arg", "steps", "pairs")
_RL_ONLY = ("env", "total_timesteps", "num_envs")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _lm_base(args, config_cls):
    """The base config of a language-model sweep from the flags, and the starting policy (the
    task and its options default to the ``--init`` policy's, as in ``purejaxpo lm``)."""
    from purejaxpo.lm.checkpoint import load_policy
    from purejaxpo.cli.lm_common import task_options
    from purejaxpo.settings import parse_settings

    values = parse_settings(args.set, config_cls, f"sweep {args.algo}",
                            {"task": "--task", "task_args": "--task-arg", "steps": "--steps"})
    if args.steps is not None:
        values["steps"] = args.steps
    if args.log_every is not None:
        values["log_every"] = args.log_every
    policy = None
    if args.algo != "lm-sft":
        if args.init is None:
            raise ValueError(f"--init: sweep {args.algo} starts from a policy (a folder "
                             "written by `purejaxpo lm sft --out DIR`)")
        policy = load_policy(args.init)
    elif args.init is not None:
        raise ValueError("--init: sweep lm-sft trains from scratch; give no --init")
    task = args.task or (policy.task if policy else "addition")
    task_args = task_options(args.task_arg)
    if not args.task_arg and policy is not None and task == policy.task:
        task_args = dict(policy.task_args)
    return config_cls(task=task, task_args=task_args, **values), policy


def cmd_sweep(args) -> int:
    """``purejaxpo sweep``: validates everything (exit 2 on bad input), then runs the sweep."""
    import jax

    from purejaxpo.presets import from_settings
    from purejaxpo.sweep.plan import config_classes

    config_cls = config_classes()[args.algo]
    lm = args.algo.startswith("lm-")
    policy = pairs = None
    try:
        # before JAX's first operation (main() did it already, unless run in-process late)
        use_cpu_cores(parse_cpu_devices(args.cpu_devices), quiet=True)
        for name in _RL_ONLY if lm else _LM_ONLY:
            if getattr(args, name) is not None:
                raise ValueError(f"{_flag(name)}: only for "
                                 + ("environment algorithms" if lm else
                                    "the language-model trainers (lm-sft, lm-grpo, ...)"))
        if args.pairs is not None and args.algo != "lm-dpo":
            raise ValueError("--pairs: only for lm-dpo")
        if lm:
            base, policy = _lm_base(args, config_cls)
        else:
            base = from_settings(args.algo, args.env, args.set, prefix="--set ",
                                 total_timesteps=args.total_timesteps, num_envs=args.num_envs)
        grid = parse_grid(args.grid or [], config_cls)
        ranges = parse_range(args.range or [], config_cls)
        if args.random is not None and not ranges:
            raise ValueError("--random: random search needs at least one --range")
        if ranges and args.random is None:
            raise ValueError("--range: give the number of samples with --random N")
        for flag in ("seeds", "chunk_size", "log_every"):
            value = getattr(args, flag)
            if value is not None and value < 1:
                raise ValueError(f"--{flag.replace('_', '-')}={value} is invalid: "
                                 "must be an integer >= 1")
        plan = plan_sweep(jax.random.PRNGKey(args.seed), args.algo, base, grid=grid,
                          ranges=ranges, num_samples=args.random, seeds=args.seeds)
        if args.pairs is not None:
            from purejaxpo.lm.pairs import preference_data

            pairs = preference_data(base, base.make_task(), policy=(policy.params, policy.model),
                                    path=args.pairs).train
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    where = f"task {base.task}" if lm else base.env
    if jax.process_index() == 0:
        print(f"purejaxpo sweep {args.algo} on {where}, {device_description()}", flush=True)
    if lm:
        from purejaxpo.sweep.lm import run_lm_plan

        result = run_lm_plan(plan, init=policy, pairs=pairs, chunk_size=args.chunk_size)
    else:
        result = run_plan(plan, chunk_size=args.chunk_size, log_every=args.log_every or 1)
    if jax.process_index() != 0:
        return 0
    table = summary(result)
    with_pd_options = table.to_string(index=False, float_format=lambda v: f"{v:.6g}")
    score = result.score
    print(f"\nconfigurations, best first ({score} over {plan.seeds} seed(s)):")
    print(with_pd_options)
    top = best(result)
    print("best: " + ", ".join(f"{n}={top[n]}" for n in plan.swept)
          + f" -> mean {score} {top['mean_' + score]:.{3 if lm else 2}f}")
    print(f"{result.num_compilations} compilation(s), {result.device_count} device(s); "
          f"compile {result.compile_s:.1f} s, run {result.run_s:.2f} s, "
          f"{result.steps_per_s:,.{1 if lm else 0}f} {result.unit}/s")
    if args.json:
        out = result.to_json()
        out.update(seed=args.seed, device=device_description())
        write_json(args.json, out)
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        result.table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


def add_cli_parser(sub) -> None:
    """Adds the ``sweep`` sub-command to the ``purejaxpo`` parser's ``sub``-parsers."""
    from purejaxpo.sweep.plan import config_classes

    p = sub.add_parser("sweep", help="a hyperparameter sweep x seeds, one program per static "
                       "setting")
    p.add_argument("algo", choices=sorted(config_classes()),
                   help="an environment algorithm, or a language-model trainer (lm-sft, "
                        "lm-grpo, lm-ppo, lm-dpo: scored by held-out exact match)")
    p.add_argument("--env", default=None,
                   help="gymnax environment; starts from its tuned preset (default CartPole-v1; "
                   "Pendulum-v1 for sac and td3)")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2,...",
                   help="values to try (repeatable; the sweep is their product); lr means "
                   "learning_rate; list settings separate values by '/' (hidden_sizes=64,64/32)")
    p.add_argument("--random", type=int, default=None, metavar="N",
                   help="random search: N samples from the --range settings")
    p.add_argument("--range", action="append", metavar="NAME=LOW:HIGH[:log]",
                   help="range to sample with --random (uniform, or log-uniform with :log)")
    p.add_argument("--seeds", type=int, default=4, help="seeds per configuration (default 4)")
    p.add_argument("--seed", type=int, default=0,
                   help="base PRNG seed of the runs and of the random search (default 0)")
    p.add_argument("--total-timesteps", type=int, default=None, help="env steps per run")
    p.add_argument("--num-envs", type=int, default=None, help="parallel environments per run")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any config field of the base config (repeatable)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="runs per device at a time (less memory); default all at once")
    p.add_argument("--log-every", type=int, default=None,
                   help="keep metrics as means over windows of this many updates (default 1); "
                        "lm-*: steps between held-out evaluations (default the config's)")
    p.add_argument("--init", metavar="DIR", default=None,
                   help="lm-grpo/lm-ppo/lm-dpo: the starting policy (`purejaxpo lm sft --out`)")
    p.add_argument("--task", default=None,
                   help="lm-*: addition or sorting (default: the --init policy's, else addition)")
    p.add_argument("--task-arg", action="append", metavar="NAME=VALUE",
                   help="lm-*: task option, e.g. --task-arg digits=4 (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="lm-*: training steps per run")
    p.add_argument("--pairs", metavar="FILE.jsonl", default=None,
                   help="lm-dpo: preference data (default: generated from the task)")
    add_cpu_args(p)
    p.add_argument("--json", metavar="PATH", help="write every run and the timings here")
    p.add_argument("--csv", metavar="PATH", help="write the table (one row per run) here")
    p.set_defaults(func=cmd_sweep)
