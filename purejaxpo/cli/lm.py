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
per line; :mod:`purejaxpo.lm.tasks.prompt_data`), with rewards ``correct``, ``contains``,
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

These modules only parse arguments, call the library (:mod:`purejaxpo.lm`) and print: the
trainers and the parser here, ``eval`` and ``generate`` in :mod:`purejaxpo.cli.lm_eval`,
what they share in :mod:`purejaxpo.cli.lm_common`.
"""

from __future__ import annotations

from purejaxpo.cli.lm_common import (
    adapter_info,
    add_common_flags,
    add_rl_flags,
    add_trainer_flags,
    check_settings,
    checkpoint_options,
    fmt,
    load_start,
    make_config,
    per_second,
    report,
    reporting_errors,
    reward_weights,
    save_result,
    user_rewards,
    warn_if_diverged,
)
from purejaxpo.cli.lm_eval import cmd_eval, cmd_generate
from purejaxpo.settings import device_description, write_json


def cmd_sft(args) -> int:
    from purejaxpo.lm.checkpoint import save_policy
    from purejaxpo.lm.config import LMSFTConfig
    from purejaxpo.lm.model import count_params
    from purejaxpo.lm.sft import train_sft

    config = make_config(LMSFTConfig, args, "lm sft", steps=args.steps,
                     stop_exact_match=args.stop_exact_match)
    result = train_sft(config, progress=args.progress, **checkpoint_options(args))
    model = config.model_config()
    tokens = result.run_total("tokens")
    out = report(args, "sft", config, result, tokens,
                  {"params": count_params(result.state.params), "model": model.to_dict(),
                   "tokens_kind": "trained answer tokens"})
    if args.out:
        save_policy(args.out, result.state.params, model, task=config.task,
                    task_args=dict(config.task_args),
                    meta={k: out[k] for k in ("command", "exact_match_after", "steps", "config")})
        print(f"saved policy to {args.out}")
    return 0


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
    check_settings(config_cls, args, f"lm {kind}")
    checkpointing = checkpoint_options(args)
    policy = load_start(args, data=args.data)
    config = make_config(config_cls, args, f"lm {kind}", policy, steps=args.steps,
                         loss=args.loss, beta=args.beta, group_size=args.group_size,
                         rewards=reward_weights(args.reward), **fixed)
    extra = user_rewards(config, policy) or None
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
    out = report(args, kind, config, result, tokens,
                  {"init": args.init or args.model, "reward_model": args.reward_model,
                   "tokens_kind": "generated completion tokens", **adapter_info(policy)})
    if args.out:
        params = result.state.params
        save_result(args, kind, params["policy"] if kind == "ppo" else params, policy, config, out)
    return 0


def cmd_rm(args) -> int:
    from purejaxpo.lm.checkpoint import load_policy, save_policy
    from purejaxpo.lm.config import LMRewardModelConfig
    from purejaxpo.lm.pairs import preference_data
    from purejaxpo.lm.reward_model import train_reward_model

    check_settings(LMRewardModelConfig, args, "lm rm")
    checkpointing = checkpoint_options(args)
    policy = load_policy(args.init) if args.init else None
    config = make_config(LMRewardModelConfig, args, "lm rm", policy, steps=args.steps)
    init = (policy.params, policy.model) if policy else None
    data = preference_data(config, config.make_task(), policy=init)
    result = train_reward_model(config, data.train, data.heldout, init_policy=init,
                                progress=args.progress, **checkpointing)
    fit = result.fit
    summary = fit.summary("ranking_accuracy")
    out = {"command": "lm rm", "task": config.task, "init": args.init, **summary,
           "pairs_per_s": per_second(config.batch_size * fit.steps_run, fit.run_s),
           "device": device_description(), "config": config.to_dict()}
    print(f"rm {config.task}: held-out ranking accuracy "
          f"{fmt(out['ranking_accuracy_before'])} -> {fmt(out['ranking_accuracy_after'])} "
          f"({config.eval_pairs} pairs) | {out['steps']} steps in {out['run_s']:.1f} s | "
          f"{out['device']}")
    warn_if_diverged(fit)
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

    check_settings(LMDPOConfig, args, "lm dpo")
    checkpointing = checkpoint_options(args)
    if args.model and not args.pairs:
        raise ValueError("--model needs --pairs FILE.jsonl (prompt/chosen/rejected per line)")
    policy = load_start(args, data=args.pairs if args.model else None)
    config = make_config(LMDPOConfig, args, "lm dpo", policy, steps=args.steps, loss=args.loss,
                     beta=args.beta)
    data = preference_data(config, config.make_task(), policy=(policy.params, policy.model),
                           path=args.pairs)
    result = train_dpo(config, policy.params, policy.model, data.train, data.heldout,
                       progress=args.progress, **checkpointing)
    extra = {
        "init": args.init or args.model,
        **adapter_info(policy),
        "pairs": data.source,
        **result.preference_summary(),
        "pairs_per_s": per_second(config.batch_size * result.fit.steps_run,
                              result.fit.run_s),
        "tokens_kind": "completion tokens through the policy (chosen + rejected; kto: completion + mismatched)",
    }
    tokens = result.fit.run_total("tokens")
    out = report(args, f"dpo[{config.loss}]", config, result.fit, tokens, extra)
    print(f"  held-out preference accuracy {fmt(extra['pref_accuracy_before'])} -> "
          f"{fmt(extra['pref_accuracy'])}; log-prob change: chosen "
          f"{fmt(extra['chosen_logp_delta'], '+.2f')}, rejected "
          f"{fmt(extra['rejected_logp_delta'], '+.2f')}")
    if args.out:
        save_result(args, "dpo", result.fit.state.params, policy, config, out)
    return 0


def add_cli_parser(sub) -> None:
    from purejaxpo.lm.estimators import ADVANTAGE_ESTIMATORS

    lm = sub.add_parser("lm", help="language-model policies: sft, grpo, ppo, dpo, rm, eval, "
                        "generate",
                        description=__doc__.split("\n\n")[0])
    lm_sub = lm.add_subparsers(dest="lm_command", required=True)

    sft = lm_sub.add_parser("sft", help="supervised fine-tuning from random weights")
    add_common_flags(sft, init=False)
    add_trainer_flags(sft)
    sft.add_argument("--stop-exact-match", type=float, default=None, metavar="X",
                     help="stop early once greedy exact match on validation prompts reaches X "
                          "(e.g. 0.3 for a partly trained starting policy for RL)")
    sft.set_defaults(func=reporting_errors(cmd_sft))

    grpo = lm_sub.add_parser("grpo", help="GRPO / Dr. GRPO / BNPO / DAPO / GSPO from a policy")
    add_common_flags(grpo, init=True)
    add_trainer_flags(grpo)
    add_rl_flags(grpo, "k3 KL coefficient to the initial policy (default 0: no reference)")
    grpo.add_argument("--estimator", default=None, choices=list(ADVANTAGE_ESTIMATORS),
                      help="advantage estimator (default grpo): "
                           + "; ".join(f"{name}: {spec.description}"
                                       for name, spec in ADVANTAGE_ESTIMATORS.items())
                           + ". REINFORCE++'s KL coefficient: --set kl_coef=0.001")
    grpo.set_defaults(func=reporting_errors(cmd_grpo))

    ppo = lm_sub.add_parser("ppo", help="PPO with a value head (critic) from a policy")
    add_common_flags(ppo, init=True)
    add_trainer_flags(ppo)
    add_rl_flags(ppo, "k3 KL coefficient in the loss (default 0; the reward already has a "
                      "per-token KL penalty, --set kl_coef=0.01)")
    ppo.set_defaults(func=reporting_errors(cmd_ppo))

    rm = lm_sub.add_parser("rm", help="Bradley-Terry reward model on preference pairs")
    add_common_flags(rm, init=False)
    add_trainer_flags(rm)
    rm.add_argument("--init", metavar="DIR", default=None,
                    help="start the reward model's trunk from this policy (recommended)")
    rm.set_defaults(func=reporting_errors(cmd_rm))

    ev = lm_sub.add_parser("eval", help="held-out greedy exact match of a saved policy")
    add_common_flags(ev, init=True)
    ev.add_argument("--num-prompts", type=int, default=512, help="held-out prompts (default 512)")
    ev.add_argument("--examples", type=int, default=5, help="example completions to print")
    ev.add_argument("--no-progress", dest="progress", action="store_false",
                    help="accepted for symmetry with the trainers (eval shows no progress bar)")
    ev.set_defaults(func=reporting_errors(cmd_eval))

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
    gen.set_defaults(func=reporting_errors(cmd_generate))

    add_dpo_parser(lm_sub)


def add_dpo_parser(lm_sub) -> None:
    import argparse

    from purejaxpo.lm.config import LMDPOConfig
    from purejaxpo.lm.preference import PREFERENCE_LOSSES, describe_preference_losses

    default = LMDPOConfig.loss
    dpo = lm_sub.add_parser(
        "dpo", help=f"preference optimisation ({', '.join(PREFERENCE_LOSSES)})",
        epilog="losses (--loss NAME; default beta; what it is; when to use it):\n"
               + describe_preference_losses(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(dpo, init=True, data=False)
    add_trainer_flags(dpo)
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
    dpo.set_defaults(func=reporting_errors(cmd_dpo))
