"""Prompts and answers from a JSON-lines file, tokenized by a Hugging Face ``tokenizer.json``:
the task a pretrained model trains on with ``lm grpo|ppo|eval --model DIR --data FILE``.

Each non-blank line is ``{"prompt": "...", "answer": "..."}`` (a preference file's
``{"prompt", "chosen", "rejected"}`` lines are read too, ``chosen`` as the answer, and
KTO's ``completion``, so ``lm dpo --pairs`` evaluates on its own file). The last tenth of the
lines (at least one) is the held-out set, never sampled for training; prompts are drawn
uniformly, with replacement, from the rest. Prompts are encoded with the tokenizer's special tokens (e.g. a
Llama BOS), answers without, then the model's EOS.

Rewards (JAX, in the compiled step, ``(batch, tokens [B, N], mask [B, N]) -> [B]``):

* ``correct``: the completion is the answer's tokens, then EOS, exactly;
* ``contains``: the answer's tokens (EOS excluded) occur somewhere in the completion;
* ``prefix``: the completion begins with the answer's tokens (whatever follows);
* ``tokens``: the fraction of answer positions holding the answer's token.

A reward written in Python on strings, ``fn(prompt, completion, answer) -> float``, runs
inside the compiled step through :func:`text_reward` (a host callback per step).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.lm.pretrained import load_tokenizer
from purejaxpo.lm.tasks.sequence import RewardFn, SequenceTask, TaskBatch
from purejaxpo.settings import read_json_lines

Array = jax.Array


@functools.lru_cache(maxsize=8)
def _read_tokenizer(directory: str):
    """``(tokenizers.Tokenizer, config.json as a dict)`` of ``directory``, read once per
    process (tasks are rebuilt from their config many times; the files are read once)."""
    path = Path(directory)
    tok = load_tokenizer(path)
    if tok is None:
        raise ValueError(f"model={directory!r} is invalid: no tokenizer.json there")
    hf = json.loads((path / "config.json").read_text()) \
        if (path / "config.json").is_file() else {}
    return tok, hf


@dataclasses.dataclass(frozen=True)
class TokenizerFile:
    """A Hugging Face tokenizer (``tokenizer.json``, read by the ``tokenizers`` library) with
    the interface of purejaxpo's tasks: ``encode``, ``decode``, ``eos_id``, ``pad_id``,
    ``size``, ``id``.

    ``directory`` holds ``tokenizer.json`` and the model's ``config.json``, whose
    ``eos_token_id`` / ``bos_token_id`` / ``pad_token_id`` / ``vocab_size`` are the ids used
    (a missing pad id is the EOS id: padding is masked everywhere).
    """

    directory: str

    def __post_init__(self):
        tok, hf = _read_tokenizer(str(Path(self.directory).resolve()))

        def first(value):
            return value[0] if isinstance(value, list) else value

        eos = first(hf.get("eos_token_id"))
        for name in ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"):
            if eos is None:
                eos = tok.token_to_id(name)
        if eos is None:
            raise ValueError(f"model={self.directory!r}: no eos_token_id in config.json and no "
                             "known end-of-text token in tokenizer.json")
        pad = first(hf.get("pad_token_id"))
        object.__setattr__(self, "_tok", tok)
        object.__setattr__(self, "_eos", int(eos))
        object.__setattr__(self, "_pad", int(eos if pad is None else pad))
        bos = first(hf.get("bos_token_id"))
        object.__setattr__(self, "_bos", None if bos is None else int(bos))
        object.__setattr__(self, "_size", int(hf.get("vocab_size") or tok.get_vocab_size()))

    @property
    def size(self) -> int:
        return self._size

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def pad_id(self) -> int:
        return self._pad

    @property
    def bos_id(self) -> int | None:
        return self._bos

    def id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"unknown token {token!r} for the tokenizer in {self.directory}")
        return int(i)

    def encode(self, text: str) -> list[int]:
        """``text``'s ids without special tokens (answers, completions)."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_prompt(self, text: str) -> list[int]:
        """``text``'s ids with the tokenizer's special tokens (e.g. a leading BOS)."""
        return list(self._tok.encode(text).ids)

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """The text of ``ids`` up to the first EOS (``<eos>`` shown unless ``skip_special``)."""
        ids = [int(i) for i in ids]
        eos = self._eos in ids
        ids = ids[:ids.index(self._eos)] if eos else ids
        text = self._tok.decode(ids, skip_special_tokens=skip_special)
        return text + ("<eos>" if eos and not skip_special else "")


def _read(path: str) -> list[tuple[str, str]]:
    """``(prompt, answer)`` of every line; ``ValueError`` naming the line and the problem."""
    rows = []
    lines = read_json_lines(path)
    if len(lines) < 2:
        raise ValueError(f"data={path!r} is invalid: needs at least 2 lines (1 is held out)")
    for where, obj in lines:
        answer_field = next((k for k in ("answer", "chosen", "completion") if k in obj),
                            "answer")
        for field in ("prompt", answer_field):
            if field not in obj:
                raise ValueError(f"{where}: missing field {field!r} (each line needs prompt "
                                 "and answer)")
            if not isinstance(obj[field], str):
                raise ValueError(f"{where}: field {field!r} must be a string")
        rows.append((obj["prompt"], obj[answer_field]))
    return rows


@functools.lru_cache(maxsize=16)
def _encoded(path: str, mtime: float, tokenizer: TokenizerFile):
    rows = _read(path)
    prompts = [tokenizer.encode_prompt(p) for p, _ in rows]
    answers = [tokenizer.encode(a) + [tokenizer.eos_id] for _, a in rows]
    for i, ids in enumerate(prompts):
        if not ids:
            raise ValueError(f"{path}: example {i + 1} has an empty prompt")
    width_p, width_a = max(map(len, prompts)), max(map(len, answers))
    p = np.full((len(rows), width_p), tokenizer.pad_id, np.int32)
    pv = np.zeros((len(rows), width_p), bool)
    a = np.full((len(rows), width_a), tokenizer.pad_id, np.int32)
    am = np.zeros((len(rows), width_a), bool)
    for i, (ids, ans) in enumerate(zip(prompts, answers)):
        p[i, width_p - len(ids):], pv[i, width_p - len(ids):] = ids, True  # left-padded
        a[i, :len(ans)], am[i, :len(ans)] = ans, True  # right-padded
    return p, pv, a, am


@dataclasses.dataclass(frozen=True)
class PromptData(SequenceTask):
    """Prompts and answers from ``path`` (JSON lines), tokenized by ``model``'s tokenizer.

    Attributes:
      path: the JSON-lines file.
      model: a directory with ``tokenizer.json`` and ``config.json`` (the pretrained model's).
      heldout_fraction: the fraction of lines (the last ones, at least one) held out for
        evaluation, in (0, 0.5].
    """

    path: str = ""
    model: str = ""
    heldout_fraction: float = 0.1

    name = "jsonl"

    def __post_init__(self):
        if not self.path or not os.path.isfile(self.path):
            raise ValueError(f"path={self.path!r} is invalid: not a file")
        if not 0 < self.heldout_fraction <= 0.5:
            raise ValueError(f"heldout_fraction={self.heldout_fraction!r} is invalid: must be "
                             "in (0, 0.5]")
        object.__setattr__(self, "tokenizer", TokenizerFile(self.model))
        arrays = _encoded(os.path.abspath(self.path), os.path.getmtime(self.path),
                          self.tokenizer)
        n = arrays[0].shape[0]
        held = max(1, int(round(n * self.heldout_fraction)))
        object.__setattr__(self, "_arrays", arrays)
        object.__setattr__(self, "_num_train", n - held)

    @property
    def num_examples(self) -> tuple[int, int]:
        """``(training, held-out)`` examples."""
        n = self._arrays[0].shape[0]
        return self._num_train, n - self._num_train

    @property
    def prompt_len(self) -> int:
        return self._arrays[0].shape[1]

    @property
    def answer_len(self) -> int:
        return self._arrays[2].shape[1]

    @property
    def answer_token_ids(self) -> tuple[int, ...]:
        return tuple(range(self.tokenizer.size))

    def _rows(self, index) -> TaskBatch:
        return TaskBatch(*(jnp.asarray(x)[index] for x in self._arrays))

    def sample(self, key: Array, n: int) -> TaskBatch:
        """``n`` training examples drawn uniformly with replacement (never held-out ones)."""
        return self._rows(jax.random.randint(key, (n,), 0, self._num_train))

    def heldout(self, n: int = 512, seed: int = 2**31 - 1) -> TaskBatch:
        """The held-out examples (at most ``n``; the same on every call; ``seed`` is unused:
        a file has one held-out set)."""
        return self._rows(jnp.arange(self._num_train, self._num_train + self.heldout_size(n)))

    def heldout_size(self, n: int) -> int:
        return min(n, self.num_examples[1])

    # -- rewards ------------------------------------------------------------------------

    def _answer_body(self, batch: TaskBatch):
        """The answer's tokens without EOS: ``[B, A]`` tokens and mask, and lengths ``[B]``."""
        body = batch.answer_mask & (batch.answers != self.tokenizer.eos_id)
        return batch.answers, body, body.sum(axis=1)

    def contains(self, batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        """``[B]`` 1.0 where the answer's tokens occur contiguously in the completion."""
        answers, body, length = self._answer_body(batch)
        n, a = tokens.shape[1], answers.shape[1]
        offsets = jnp.arange(n)[:, None] + jnp.arange(a)[None, :]  # [N, A]
        window = jnp.take(tokens, jnp.minimum(offsets, n - 1), axis=1)  # [B, N, A]
        inside = jnp.take(mask, jnp.minimum(offsets, n - 1), axis=1) & (offsets < n)
        same = jnp.where(body[:, None, :], (window == answers[:, None, :]) & inside, True)
        return (jnp.any(jnp.all(same, axis=2), axis=1) & (length > 0)).astype(jnp.float32)

    def prefix(self, batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        """``[B]`` 1.0 where the completion begins with the answer's tokens."""
        answers, body, length = self._answer_body(batch)
        n = tokens.shape[1]
        if n < answers.shape[1]:
            raise ValueError(f"completions of {n} tokens are shorter than the task's answers "
                             f"({answers.shape[1]} tokens)")
        head, head_mask = tokens[:, :answers.shape[1]], mask[:, :answers.shape[1]]
        same = jnp.where(body, (head == answers) & head_mask, True)
        return (jnp.all(same, axis=1) & (length > 0)).astype(jnp.float32)

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"correct": self.exact_match, "contains": self.contains, "prefix": self.prefix,
                "tokens": self.digit_accuracy}

    def text_reward(self, fn: Callable[[str, str, str], float]) -> RewardFn:
        """``fn(prompt, completion, answer) -> float`` on strings as a reward (see
        :func:`text_reward`)."""
        return text_reward(fn, self.tokenizer)


def text_reward(fn: Callable[[str, str, str], float], tokenizer: Any) -> RewardFn:
    """A reward written in Python on strings, usable inside the compiled step.

    ``fn(prompt, completion, answer) -> float`` is called on the host (``jax.pure_callback``)
    for each sequence with the decoded prompt, completion (up to EOS) and reference answer.
    Deterministic functions only: the callback may be run more than once per step.
    """

    def host(prompts, prompt_valid, answers, answer_mask, tokens, mask):
        out = np.zeros(tokens.shape[0], np.float32)
        for i in range(tokens.shape[0]):
            out[i] = float(fn(tokenizer.decode(prompts[i][prompt_valid[i]]),
                              tokenizer.decode(tokens[i][mask[i]]),
                              tokenizer.decode(answers[i][answer_mask[i]])))
        return out

    def reward(batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        shape = jax.ShapeDtypeStruct(tokens.shape[:1], jnp.float32)
        return jax.pure_callback(host, shape, batch.prompts, batch.prompt_valid, batch.answers,
                                 batch.answer_mask, tokens, mask, vmap_method="sequential")

    reward.__name__ = getattr(fn, "__name__", "text_reward")
    return reward


def load_reward(spec: str, tokenizer: Any) -> RewardFn:
    """The text reward named ``spec``: ``package.module:function`` (importable) or
    ``path/to/file.py:function``; ``ValueError`` if it cannot be found or is not callable."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"reward={spec!r} is invalid: expected module:function or "
                         "file.py:function")
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise ValueError(f"reward={spec!r} is invalid: no file {module_name}")
            loader = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"reward={spec!r} is invalid: cannot import {module_name} ({e})") \
            from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward={spec!r} is invalid: {module_name} has no function {attr!r}")
    return text_reward(fn, tokenizer)
