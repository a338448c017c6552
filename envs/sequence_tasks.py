"""Synthetic sequence tasks with verifiable rewards, for language-model RL and SFT.

Every task has a tiny word-level tokenizer, a seeded prompt generator and reward functions
written in JAX, so sampling prompts, scoring completions and updating the policy all happen
inside one jitted step.

Shapes: ``B`` prompts, ``P`` prompt tokens, ``A`` answer tokens (the reference completion,
EOS included), ``N`` completion tokens (sampled; ``N >= A``).

Tasks:

* ``addition``: ``"1 2 3 + 4 5 6 ="`` -> the ``digits + 1`` digits of the sum, zero-padded and
  by default reversed (least significant first, the order in which carries are computed), then
  EOS: ``"9 7 5 0 <eos>"``.
* ``sorting``: ``"3 1 4 1 5 9 ="`` -> the digits in ascending order, then EOS.

Rewards (each ``(batch, completions) -> [B]`` float32):

* ``correct``: 1 for an exact match of the answer, EOS included, else 0.
* ``format``: 1 when the completion has the answer's shape (the right number of answer tokens,
  then EOS), right or wrong.
* ``digits``: the fraction of answer positions (EOS excluded) that hold the right token, a dense
  partial-credit signal.

Users may pass their own reward functions with the same signature (see
:func:`purejaxpo.lm.rewards.combine`).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
DIGIT_TOKENS = tuple(str(d) for d in range(10))
ARITHMETIC_VOCAB = SPECIAL_TOKENS + DIGIT_TOKENS + ("+", "=")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary; ids are positions in ``vocab``.

    ``encode`` splits on whitespace (a word not in the vocabulary is split into characters, so
    ``"123+456="`` works too) and raises ``ValueError`` naming an unknown token.
    """

    vocab: tuple[str, ...] = ARITHMETIC_VOCAB

    def __post_init__(self):
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab has repeated tokens")
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"vocab must contain the special tokens {missing}")

    @property
    def size(self) -> int:
        return len(self.vocab)

    def id(self, token: str) -> int:
        try:
            return self.vocab.index(token)
        except ValueError:
            raise ValueError(f"unknown token {token!r}; vocabulary: {' '.join(self.vocab)}")

    @property
    def pad_id(self) -> int:
        return self.id("<pad>")

    @property
    def bos_id(self) -> int:
        return self.id("<bos>")

    @property
    def eos_id(self) -> int:
        return self.id("<eos>")

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            if word in self.vocab:
                ids.append(self.id(word))
            else:
                ids.extend(self.id(ch) for ch in word)
        return ids

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Space-separated tokens, stopping at the first EOS (which is kept unless skipped)."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                if not skip_special:
                    words.append("<eos>")
                break
            if skip_special and self.vocab[i] in SPECIAL_TOKENS:
                continue
            words.append(self.vocab[i])
        return " ".join(words)


class TaskBatch(NamedTuple):
    """A batch of prompts and their reference answers.

    Attributes:
      prompts: ``[B, P]`` int32, left-padded.
      prompt_valid: ``[B, P]`` bool.
      answers: ``[B, A]`` int32, the correct completion, EOS included, pad after.
      answer_mask: ``[B, A]`` bool.
      answer_observed: ``[B, A]`` bool or None: answer tokens a tool writes (in a trace with
        tool calls), which SFT reads but does not train on.
    """

    prompts: Array
    prompt_valid: Array
    answers: Array
    answer_mask: Array
    answer_observed: Array | None = None

    def repeat(self, group_size: int) -> "TaskBatch":
        """Each prompt ``group_size`` times in a row: ``[B * G, ...]`` (groups are contiguous)."""
        return jax.tree_util.tree_map(lambda x: jnp.repeat(x, group_size, axis=0), self)


RewardFn = Callable[[TaskBatch, Array, Array], Array]
"""``(batch, completion_tokens [B, N], completion_mask [B, N]) -> [B]`` float32."""


def _pad_to(x: Array, n: int, value) -> Array:
    return jnp.pad(x, ((0, 0), (0, n - x.shape[1])), constant_values=value)


@dataclasses.dataclass(frozen=True)
class SequenceTask:
    """Base class: subclasses set the lengths and implement :meth:`sample`."""

    tokenizer: Tokenizer = Tokenizer()

    name = "task"

    @property
    def prompt_len(self) -> int:
        raise NotImplementedError

    @property
    def answer_len(self) -> int:
        """``A``: answer tokens, EOS included; the default completion length."""
        raise NotImplementedError

    @property
    def answer_token_ids(self) -> tuple[int, ...]:
        """Tokens an answer is made of (before its EOS); the ``format`` reward checks them."""
        return tuple(self.tokenizer.id(d) for d in DIGIT_TOKENS)

    def sample(self, key: Array, n: int) -> TaskBatch:
        """``n`` random prompts with their answers (pure, jittable; ``n`` static)."""
        raise NotImplementedError

    def heldout(self, n: int = 512, seed: int = 2**31 - 1) -> TaskBatch:
        """A fixed evaluation set: the same ``n`` prompts on every call and every machine."""
        return self.sample(jax.random.PRNGKey(seed), n)

    def heldout_size(self, n: int) -> int:
        """How many prompts :meth:`heldout` gives when asked for ``n``."""
        return n

    # -- rewards ------------------------------------------------------------------------

    def _answer_positions(self, tokens: Array, mask: Array, batch: TaskBatch):
        n = tokens.shape[1]
        if n < batch.answers.shape[1]:
            raise ValueError(
                f"completions of {n} tokens are shorter than the task's answers "
                f"({batch.answers.shape[1]} tokens)")
        answers = _pad_to(batch.answers, n, self.tokenizer.pad_id)
        answer_mask = _pad_to(batch.answer_mask, n, False)
        return answers, answer_mask

    def exact_match(self, batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        """``[B]`` 1.0 where the completion equals the answer (EOS included, nothing after)."""
        answers, answer_mask = self._answer_positions(tokens, mask, batch)
        same = jnp.where(answer_mask, tokens == answers, True) & (mask == answer_mask)
        return jnp.all(same, axis=1).astype(jnp.float32)

    def format_ok(self, batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        """``[B]`` 1.0 where the completion has the answer's shape: answer tokens, then EOS."""
        answers, answer_mask = self._answer_positions(tokens, mask, batch)
        is_eos = answers == self.tokenizer.eos_id
        allowed = jnp.isin(tokens, jnp.asarray(self.answer_token_ids))
        ok = jnp.where(is_eos, tokens == self.tokenizer.eos_id,
                       jnp.where(answer_mask, allowed, True))
        ok = ok & (mask == answer_mask)
        return jnp.all(ok, axis=1).astype(jnp.float32)

    def digit_accuracy(self, batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        """``[B]`` fraction of the answer's positions (EOS excluded) holding the right token."""
        answers, answer_mask = self._answer_positions(tokens, mask, batch)
        scored = answer_mask & (answers != self.tokenizer.eos_id)
        right = scored & (tokens == answers) & mask
        return jnp.sum(right, axis=1) / jnp.maximum(jnp.sum(scored, axis=1), 1)

    def reward_functions(self) -> dict[str, RewardFn]:
        """The task's named rewards."""
        return {"correct": self.exact_match, "format": self.format_ok,
                "digits": self.digit_accuracy}

    def decode_batch(self, batch: TaskBatch, tokens: Array | None = None, limit: int = 5):
        """Human-readable ``prompt -> completion`` lines (host side, for logs and examples)."""
        lines = []
        for i in range(min(limit, batch.prompts.shape[0])):
            prompt = self.tokenizer.decode(np.asarray(batch.prompts[i])[
                np.asarray(batch.prompt_valid[i])])
            shown = batch.answers[i] if tokens is None else tokens[i]
            lines.append(f"{prompt} {self.tokenizer.decode(shown, skip_special=False)}")
        return lines


def _digits(x: Array, places: int) -> Array:
    """``[B] -> [B, places]`` decimal digits, most significant first, zero-padded."""
    powers = 10 ** jnp.arange(places - 1, -1, -1)
    return (x[:, None] // powers) % 10


@dataclasses.dataclass(frozen=True)
class AdditionTask(SequenceTask):
    """``digits``-digit addition; the sum has ``digits + 1`` digits, reversed if ``reverse``."""

    digits: int = 3
    reverse: bool = True

    name = "addition"

    def __post_init__(self):
        if not isinstance(self.digits, int) or not 1 <= self.digits <= 8:
            raise ValueError(f"digits must be an integer in [1, 8], got {self.digits!r}")

    @property
    def prompt_len(self) -> int:
        return 2 * self.digits + 2

    @property
    def answer_len(self) -> int:
        return self.digits + 2

    def sample(self, key: Array, n: int) -> TaskBatch:
        tok = self.tokenizer
        ka, kb = jax.random.split(key)
        high = 10**self.digits
        a = jax.random.randint(ka, (n,), 0, high)
        b = jax.random.randint(kb, (n,), 0, high)
        digit0 = tok.id("0")
        column = lambda t: jnp.full((n, 1), tok.id(t), jnp.int32)  # noqa: E731
        prompts = jnp.concatenate(
            [_digits(a, self.digits) + digit0, column("+"), _digits(b, self.digits) + digit0,
             column("=")], axis=1).astype(jnp.int32)
        total = _digits(a + b, self.digits + 1)
        if self.reverse:
            total = total[:, ::-1]
        answers = jnp.concatenate([total + digit0, column("<eos>")], axis=1).astype(jnp.int32)
        return TaskBatch(prompts, jnp.ones_like(prompts, bool), answers,
                         jnp.ones_like(answers, bool))


@dataclasses.dataclass(frozen=True)
class SortingTask(SequenceTask):
    """Sort ``length`` random digits in ascending order."""

    length: int = 6

    name = "sorting"

    def __post_init__(self):
        if not isinstance(self.length, int) or not 2 <= self.length <= 16:
            raise ValueError(f"length must be an integer in [2, 16], got {self.length!r}")

    @property
    def prompt_len(self) -> int:
        return self.length + 1

    @property
    def answer_len(self) -> int:
        return self.length + 1

    def sample(self, key: Array, n: int) -> TaskBatch:
        tok = self.tokenizer
        values = jax.random.randint(key, (n, self.length), 0, 10)
        digit0 = tok.id("0")
        prompts = jnp.concatenate(
            [values + digit0, jnp.full((n, 1), tok.id("="))], axis=1).astype(jnp.int32)
        answers = jnp.concatenate(
            [jnp.sort(values, axis=1) + digit0, jnp.full((n, 1), tok.eos_id)],
            axis=1).astype(jnp.int32)
        return TaskBatch(prompts, jnp.ones_like(prompts, bool), answers,
                         jnp.ones_like(answers, bool))


TASKS = {"addition": AdditionTask, "sorting": SortingTask}


def task_classes() -> dict[str, type]:
    """Every task by name: the synthetic ones and ``jsonl``
    (:class:`~purejaxpo.envs.prompt_data.PromptData`, prompts and answers from a file)."""
    from purejaxpo.envs.prompt_data import PromptData

    return {**TASKS, "jsonl": PromptData}


def make_task(name: str, **kwargs) -> SequenceTask:
    """The task ``name`` (``addition``, ``sorting``, or ``jsonl`` with ``path`` and ``model``)
    with options such as ``digits=3``."""
    classes = task_classes()
    if name not in classes:
        close = difflib.get_close_matches(name, list(classes), n=2, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"task={name!r} is not a known task.{hint} Valid tasks: "
                         f"{', '.join(classes)}.")
    cls = classes[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"tokenizer"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for task {name!r}; valid: {sorted(fields)}")
    return cls(**kwargs)
