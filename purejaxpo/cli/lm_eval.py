"""``purejaxpo lm eval`` (held-out greedy exact match of a policy, with example completions)
and ``purejaxpo lm generate`` (a Hugging Face-format checkpoint's continuation of text)."""

from __future__ import annotations

import sys

from purejaxpo.cli.lm_common import load_start, task_options
from purejaxpo.settings import device_description, write_json


def cmd_eval(args) -> int:
    import math
    import time

    import numpy as np

    from purejaxpo.lm.tasks import make_task
    from purejaxpo.lm.common import greedy_completions, make_evaluator
    from purejaxpo.settings import json_safe

    policy = load_start(args, data=args.data, adapters=False)
    name = args.task or policy.task
    task = make_task(name, **{**(policy.task_args if name == policy.task else {}),
                              **task_options(args.task_arg)})
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
    from purejaxpo.lm.tasks.prompt_data import TokenizerFile

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
