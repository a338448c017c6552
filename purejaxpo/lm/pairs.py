"""Preference data: pairs ``(prompt, chosen, rejected)`` and unpaired labelled completions.

Sources:

* :func:`synthetic_pairs`: from a task, chosen = the correct answer, rejected = a near miss (the
  answer with one answer token changed) or, with a policy, the policy's own sampled wrong
  answer (falling back to a near miss where the sample was right);
* :func:`load_jsonl`: user data, one JSON object per line, with ``prompt``, ``chosen`` and
  ``rejected`` fields (pairs) or ``prompt``, ``completion`` and ``label`` fields (unpaired, for
  KTO), tokenized by the task's tokenizer. Every line is checked before anything is returned;
  a bad line raises ``ValueError`` naming its number and the problem;
* :func:`preference_data`: a run's training and held-out sets from either source.

Shapes: ``n`` examples, ``P`` prompt tokens (left-padded), ``N`` completion tokens (EOS
included, right-padded).
"""

from __future__ import annotations

import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.lm.tasks.sequence import SequenceTask, TaskBatch, Tokenizer
from purejaxpo.settings import read_json_lines

Array = jax.Array


class Pairs(NamedTuple):
    """``n`` preference pairs: prompts ``[n, P]`` and chosen / rejected completions ``[n, N]``."""

    prompts: Array
    prompt_valid: Array
    chosen: Array
    chosen_mask: Array
    rejected: Array
    rejected_mask: Array

    def __len__(self) -> int:
        return int(self.prompts.shape[0])

    def stacked(self) -> tuple[Array, Array, Array, Array]:
        """``(prompts, prompt_valid, completions, completion_mask)`` ``[2n, ...]``: the chosen
        completions, then the rejected ones, each after its prompt (one model pass for both)."""
        cat = lambda a, b: jnp.concatenate([a, b], axis=0)  # noqa: E731
        return (cat(self.prompts, self.prompts), cat(self.prompt_valid, self.prompt_valid),
                cat(self.chosen, self.rejected), cat(self.chosen_mask, self.rejected_mask))


class Unpaired(NamedTuple):
    """``n`` completions labelled desirable or not (KTO): ``[n, P]``, ``[n, N]``, ``[n]``."""

    prompts: Array
    prompt_valid: Array
    completions: Array
    completion_mask: Array
    desirable: Array

    def __len__(self) -> int:
        return int(self.prompts.shape[0])


def pairs_to_unpaired(pairs: Pairs) -> Unpaired:
    """Each pair as two unpaired examples: chosen (desirable), rejected (undesirable)."""
    n = len(pairs)
    return Unpaired(*pairs.stacked(), jnp.concatenate([jnp.ones(n, bool), jnp.zeros(n, bool)]))


def near_miss(key: Array, task: SequenceTask, batch: TaskBatch) -> Array:
    """The answers ``[n, A]`` with one answer token (never EOS) replaced by a different one."""
    n = batch.answers.shape[0]
    eos = task.tokenizer.eos_id
    choices = jnp.asarray(task.answer_token_ids)
    k_pos, k_tok = jax.random.split(key)
    scored = batch.answer_mask & (batch.answers != eos)
    # A uniformly random scored position per row.
    pos = jax.random.categorical(k_pos, jnp.where(scored, 0.0, -jnp.inf), axis=-1)
    current = batch.answers[jnp.arange(n), pos]
    # A random different token: shift the current token's index by 1..K-1 within the choices.
    index = jnp.argmax(choices[None, :] == current[:, None], axis=-1)
    shift = jax.random.randint(k_tok, (n,), 1, len(choices))
    replacement = choices[(index + shift) % len(choices)]
    return batch.answers.at[jnp.arange(n), pos].set(replacement)


def synthetic_pairs(key: Array, task: SequenceTask, n: int, *, rejected: str = "near_miss",
                    policy=None, heldout: bool = False) -> Pairs:
    """``n`` pairs from ``task``: chosen is the correct answer, rejected a wrong one.

    Args:
      key: PRNG key (prompts, corruptions, samples).
      task: the task.
      n: number of pairs.
      rejected: ``"near_miss"`` (one token changed) or ``"policy"`` (a sample of ``policy``
        that is wrong; a near miss where the sample happened to be right).
      policy: ``(params, model_config)`` for ``rejected="policy"``.
      heldout: draw the prompts from the task's fixed held-out set instead (evaluation pairs).
    """
    if rejected not in ("near_miss", "policy"):
        raise ValueError(f"rejected={rejected!r} is invalid: must be 'near_miss' or 'policy'")
    k_prompt, k_miss, k_sample = jax.random.split(key, 3)
    batch = task.heldout(n) if heldout else task.sample(k_prompt, n)
    wrong = near_miss(k_miss, task, batch)
    wrong_mask = batch.answer_mask
    if rejected == "policy":
        if policy is None:
            raise ValueError("rejected='policy' needs policy=(params, model_config)")
        from purejaxpo.lm.sampling import generate

        params, model = policy
        tok = task.tokenizer
        sample = generate(k_sample, params, model, batch.prompts, batch.prompt_valid,
                          max_new_tokens=task.answer_len, eos_id=tok.eos_id, pad_id=tok.pad_id)
        right = task.exact_match(batch, sample.tokens, sample.mask) > 0
        wrong = jnp.where(right[:, None], wrong, sample.tokens)
        wrong_mask = jnp.where(right[:, None], wrong_mask, sample.mask)
    return Pairs(batch.prompts, batch.prompt_valid, batch.answers, batch.answer_mask, wrong,
                 wrong_mask)


# -- JSON lines ------------------------------------------------------------------------------

PAIR_FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_FIELDS = ("prompt", "completion", "label")


def _encode_completion(tokenizer: Tokenizer, text: str) -> list[int]:
    ids = tokenizer.encode(text)
    if not ids or ids[-1] != tokenizer.eos_id:
        ids.append(tokenizer.eos_id)
    return ids


def _left_pad(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), pad, np.int32)
    valid = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        if r:
            out[i, -len(r):] = r
            valid[i, -len(r):] = True
    return out, valid


def _right_pad(rows: list[list[int]], pad: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.full((len(rows), width), pad, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
        mask[i, :len(r)] = True
    return out, mask


def load_jsonl(path: str, tokenizer: Tokenizer, *, max_len: int | None = None
               ) -> Pairs | Unpaired:
    """Reads preference data from a JSON-lines file.

    Each non-blank line is an object with either ``prompt``, ``chosen``, ``rejected`` (all
    strings: pairs) or ``prompt``, ``completion`` (strings) and ``label`` (true for desirable:
    unpaired, for KTO); the first line decides which, and every line must then have that kind.
    Completions get an EOS appended unless they end with one. ``max_len``, if given, bounds
    prompt plus completion length (the model's context).

    Raises:
      ValueError: naming the line number and the missing field, bad value or unknown token;
        nothing is returned unless every line is good.
    """
    prompts, first, second, labels = [], [], [], []
    kind = None
    lines = read_json_lines(path)
    if not lines:
        raise ValueError(f"{path}: no examples (the file is empty)")
    for where, obj in lines:
        if kind is None:
            kind = "unpaired" if "completion" in obj or "label" in obj else "pairs"
        fields = UNPAIRED_FIELDS if kind == "unpaired" else PAIR_FIELDS
        missing = [k for k in fields if k not in obj]
        if missing:
            raise ValueError(f"{where}: missing field {missing[0]!r} (each line needs "
                             f"{', '.join(fields)})")
        for k in fields[:2] + ((fields[2],) if kind == "pairs" else ()):
            if not isinstance(obj[k], str):
                raise ValueError(f"{where}: field {k!r} must be a string")
        try:
            prompt = getattr(tokenizer, "encode_prompt", tokenizer.encode)(obj["prompt"])
            a = _encode_completion(tokenizer, obj[fields[1]])
            b = _encode_completion(tokenizer, obj["rejected"]) if kind == "pairs" else None
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if kind == "unpaired":
            if not isinstance(obj["label"], bool):
                raise ValueError(f"{where}: field 'label' must be true or false")
            labels.append(obj["label"])
        longest = len(prompt) + max(len(a), len(b or []))
        if max_len is not None and longest > max_len:
            raise ValueError(f"{where}: prompt + completion is {longest} tokens, more than "
                             f"the model's max_len {max_len}")
        prompts.append(prompt)
        first.append(a)
        second.append(b)
    pad = tokenizer.pad_id
    p, pv = _left_pad(prompts, pad)
    width = max(len(r) for r in first + [s for s in second if s is not None])
    c, cm = _right_pad(first, pad, width)
    if kind == "unpaired":
        return Unpaired(jnp.asarray(p), jnp.asarray(pv), jnp.asarray(c), jnp.asarray(cm),
                        jnp.asarray(labels))
    r, rm = _right_pad(second, pad, width)
    return Pairs(*(jnp.asarray(x) for x in (p, pv, c, cm, r, rm)))


def write_jsonl(path: str, pairs: Pairs, tokenizer: Tokenizer) -> None:
    """Writes pairs as JSON lines (the format :func:`load_jsonl` reads)."""
    with open(path, "w") as f:
        for i in range(len(pairs)):
            f.write(json.dumps({
                "prompt": tokenizer.decode(np.asarray(pairs.prompts[i])),
                "chosen": tokenizer.decode(np.asarray(pairs.chosen[i])),
                "rejected": tokenizer.decode(np.asarray(pairs.rejected[i])),
            }) + "\n")


# -- training and held-out data of a run ------------------------------------------------------


class PreferenceData(NamedTuple):
    """A run's preference data: what it trains on, what it is evaluated on, where it came from."""

    train: Pairs | Unpaired
    heldout: Pairs
    source: str  # the file, or "synthetic (<rejected>)"


def preference_data(config, task: SequenceTask, *, policy=None,
                    path: str | None = None) -> PreferenceData:
    """Training and held-out preference data for a run configured by ``config`` (an
    :class:`~purejaxpo.lm.config.LMDPOConfig` or
    :class:`~purejaxpo.lm.config.LMRewardModelConfig`).

    Without ``path``: ``config.num_pairs`` training pairs and ``config.eval_pairs`` pairs on the
    task's held-out prompts, generated by :func:`synthetic_pairs` with
    ``rejected=config.rejected`` (``policy`` is ``(params, model_config)``, needed for
    ``rejected="policy"``). With ``path`` (:func:`load_jsonl`, bounded by the policy's
    ``max_len``): the last tenth of the file (at least one example) is held out; unpaired (KTO)
    data has no pairs to rank, so its held-out set is generated near-miss pairs on the held-out
    prompts instead.
    """
    key = jax.random.PRNGKey(config.seed)
    if path is None:
        train = synthetic_pairs(key, task, config.num_pairs, rejected=config.rejected,
                                policy=policy)
        held = synthetic_pairs(jax.random.fold_in(key, 1), task, config.eval_pairs,
                               rejected=config.rejected, policy=policy, heldout=True)
        return PreferenceData(train, held, f"synthetic ({config.rejected})")
    data = load_jsonl(path, task.tokenizer, max_len=policy[1].max_len if policy else None)
    if len(data) < 2:
        raise ValueError(f"pairs file {path}: needs at least 2 examples (1 held out)")
    n_eval = max(1, len(data) // 10)
    train = jax.tree_util.tree_map(lambda x: x[:-n_eval], data)
    held = jax.tree_util.tree_map(lambda x: x[-n_eval:], data)
    if not isinstance(held, Pairs):
        held = synthetic_pairs(jax.random.fold_in(key, 1), task, config.eval_pairs,
                               heldout=True)
    return PreferenceData(train, held, str(path))
