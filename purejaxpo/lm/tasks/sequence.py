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

Users may pass their own reward functions with the same signature: the GRPO and PPO trainers
take them as ``extra_rewards={name: fn}``, weighted with the task's by the config's ``rewards``
(:func:`purejaxpo.lm.grpo.resolve_rewards`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.lm.tools import TOOLS

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

    @property
    def tool_use(self):
        """The :class:`~purejaxpo.lm.tools.ToolUse` the policy may call while sampling on this
        task, or None (no tools)."""
        return None

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


TOOL_TOKENS = ("<call>", "</call>", "</result>", "<err>")
MULTIPLY_VOCAB = ARITHMETIC_VOCAB + ("-", "*") + TOOL_TOKENS


@dataclasses.dataclass(frozen=True)
class MultiplyTask(SequenceTask):
    """``a * b`` with ``a`` of ``digits_a`` and ``b`` of ``digits_b`` digits: ``"4 5 6 * 7 8 ="``
    -> the product's digits, most significant first, no leading zeros, then EOS:
    ``"3 5 5 6 8 <eos>"``. Hard to learn in the head for a small policy; easy with a tool.

    With ``tools="calculator"`` the policy may call the calculator while it samples
    (:mod:`purejaxpo.lm.tools`; ``max_calls`` per completion), e.g.
    ``<call> 4 5 6 * 7 8 </call> 3 5 5 6 8 </result> 3 5 5 6 8 <eos>``, where the result and
    ``</result>`` are written by the tool. ``tool_traces`` is the fraction of SFT answers
    shown as such a trace (the rest answer directly). Whatever the trace, a completion is
    scored on its final answer: the tokens after its last ``</result>`` (all of it without a
    call).

    Rewards: ``correct`` (the final answer exactly, then EOS), ``format`` (no malformed call,
    and a final answer of digits then EOS), ``digits`` (fraction of the final answer's digits
    right), ``calls`` (the number of calls: give it a negative weight for a cost per call).
    """

    digits_a: int = 3
    digits_b: int = 2
    tools: str = ""
    max_calls: int = 2
    tool_traces: float = 0.0
    tokenizer: Tokenizer = Tokenizer(MULTIPLY_VOCAB)

    name = "multiply"

    def __post_init__(self):
        for field, value, high in (("digits_a", self.digits_a, 4),
                                   ("digits_b", self.digits_b, 4)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ValueError(f"{field} must be an integer in [1, {high}], got {value!r}")
        if self.tools:
            if self.tools not in TOOLS:
                raise ValueError(f"tools={self.tools!r} is invalid: known tools are "
                                 f"{sorted(TOOLS)} (or '' for none)")
        if isinstance(self.max_calls, bool) or not isinstance(self.max_calls, int) \
                or not 1 <= self.max_calls <= 8:
            raise ValueError(f"max_calls must be an integer in [1, 8], got {self.max_calls!r}")
        if not 0.0 <= self.tool_traces <= 1.0:
            raise ValueError(f"tool_traces must be in [0, 1], got {self.tool_traces!r}")

    @property
    def tool_use(self):
        if not self.tools:
            return None
        return TOOLS[self.tools](self)

    @property
    def prompt_len(self) -> int:
        return self.digits_a + self.digits_b + 2

    @property
    def _product_len(self) -> int:
        return self.digits_a + self.digits_b

    @property
    def answer_len(self) -> int:
        """The longest answer: a trace with one call (the call, the result, the answer)."""
        call = self.digits_a + self.digits_b + 3  # <call> a * b </call>
        return call + (self._product_len + 1) + self._product_len + 1

    def _operands(self, prompts: Array) -> tuple[Array, Array]:
        digit0 = self.tokenizer.id("0")
        da, db = self.digits_a, self.digits_b
        place = lambda d: 10 ** jnp.arange(d - 1, -1, -1)  # noqa: E731
        a = jnp.sum((prompts[:, :da] - digit0) * place(da), axis=1)
        b = jnp.sum((prompts[:, da + 1:da + 1 + db] - digit0) * place(db), axis=1)
        return a, b

    def _direct(self, prompts: Array) -> tuple[Array, Array]:
        """The direct answer ``[B, D + 1]`` (product digits, no leading zeros, then EOS,
        padded) and its mask."""
        tok = self.tokenizer
        a, b = self._operands(prompts)
        width = self._product_len
        digits = _digits(a * b, width)
        first = jnp.argmax((digits > 0) | (jnp.arange(width) == width - 1), axis=1)
        length = width - first  # digits of the product
        idx = jnp.arange(width + 1)[None, :] + first[:, None]
        body = jnp.take_along_axis(digits, jnp.minimum(idx, width - 1), axis=1) + tok.id("0")
        pos = jnp.arange(width + 1)[None, :]
        answer = jnp.where(pos < length[:, None], body,
                           jnp.where(pos == length[:, None], tok.eos_id, tok.pad_id))
        return answer.astype(jnp.int32), pos <= length[:, None]

    def sample(self, key: Array, n: int) -> TaskBatch:
        tok = self.tokenizer
        ka, kb, kt = jax.random.split(key, 3)
        a = jax.random.randint(ka, (n,), 10 ** (self.digits_a - 1), 10 ** self.digits_a)
        b = jax.random.randint(kb, (n,), 10 ** (self.digits_b - 1), 10 ** self.digits_b)
        digit0 = tok.id("0")
        column = lambda t: jnp.full((n, 1), tok.id(t), jnp.int32)  # noqa: E731
        operands = [_digits(a, self.digits_a) + digit0, column("*"),
                    _digits(b, self.digits_b) + digit0]
        prompts = jnp.concatenate(operands + [column("=")], axis=1).astype(jnp.int32)
        direct, direct_mask = self._direct(prompts)
        # The trace: <call> a * b </call> result </result> answer <eos>.
        width = self.answer_len
        result = jnp.where(direct_mask & (direct != tok.eos_id), direct, -1)
        call = jnp.concatenate([column("<call>")] + operands + [column("</call>")], axis=1)
        result_close = jnp.where(direct == tok.eos_id, tok.id("</result>"), result)
        n_res = jnp.sum(direct_mask, axis=1)  # result digits + </result>
        parts = jnp.concatenate([call, result_close, direct], axis=1)
        part_mask = jnp.concatenate([jnp.ones_like(call, bool), direct_mask, direct_mask],
                                    axis=1)
        # Left-align the valid tokens (the result has padding after its </result>).
        order = jnp.argsort(~part_mask, axis=1, stable=True)
        trace = jnp.take_along_axis(parts, order, axis=1)
        trace_mask = jnp.take_along_axis(part_mask, order, axis=1)
        c = call.shape[1]
        pos = jnp.arange(trace.shape[1])[None, :]
        observed = (pos >= c) & (pos < c + n_res[:, None])
        trace = jnp.where(trace_mask, trace, tok.pad_id)
        pad = width - direct.shape[1]
        direct = jnp.pad(direct, ((0, 0), (0, pad)), constant_values=tok.pad_id)
        direct_mask = jnp.pad(direct_mask, ((0, 0), (0, pad)))
        use = jax.random.uniform(kt, (n,)) < self.tool_traces
        return TaskBatch(prompts, jnp.ones_like(prompts, bool),
                         jnp.where(use[:, None], trace[:, :width], direct),
                         jnp.where(use[:, None], trace_mask[:, :width], direct_mask),
                         use[:, None] & observed[:, :width])

    # -- rewards: on the final answer -----------------------------------------------------

    def final_answer(self, tokens: Array, mask: Array) -> tuple[Array, Array]:
        """The tokens after the last ``</result>`` (all of them without one), moved to the
        front: ``[B, N]`` and their mask."""
        n = tokens.shape[1]
        pos = jnp.arange(n)[None, :]
        closes = (tokens == self.tokenizer.id("</result>")) & mask
        start = jnp.max(jnp.where(closes, pos + 1, 0), axis=1)
        idx = jnp.minimum(pos + start[:, None], n - 1)
        inside = (pos + start[:, None]) < n
        return (jnp.take_along_axis(tokens, idx, axis=1),
                jnp.take_along_axis(mask, idx, axis=1) & inside)

    def _direct_batch(self, batch: TaskBatch) -> TaskBatch:
        answers, answer_mask = self._direct(batch.prompts)
        return batch._replace(answers=answers, answer_mask=answer_mask, answer_observed=None)

    def exact_match(self, batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        return super().exact_match(self._direct_batch(batch), *self.final_answer(tokens, mask))

    def digit_accuracy(self, batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        return super().digit_accuracy(self._direct_batch(batch),
                                      *self.final_answer(tokens, mask))

    def format_ok(self, batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        """No malformed call (no ``<err>``), and a final answer of digits then EOS."""
        final, final_mask = self.final_answer(tokens, mask)
        eos = final == self.tokenizer.eos_id
        digit = jnp.isin(final, jnp.asarray(self.answer_token_ids))
        ends = jnp.any(final_mask & eos, axis=1)
        before_eos = jnp.cumsum(eos & final_mask, axis=1) == 0
        digits_only = jnp.all(jnp.where(final_mask & before_eos, digit, True), axis=1)
        some = jnp.any(final_mask & before_eos & digit, axis=1)
        no_error = ~jnp.any((tokens == self.tokenizer.id("<err>")) & mask, axis=1)
        return (ends & digits_only & some & no_error).astype(jnp.float32)

    def num_calls(self, batch: TaskBatch, tokens: Array, mask: Array) -> Array:
        """``[B]`` calls opened in each completion."""
        return jnp.sum((tokens == self.tokenizer.id("<call>")) & mask, axis=1).astype(
            jnp.float32)

    def reward_functions(self) -> dict[str, RewardFn]:
        return {**super().reward_functions(), "calls": self.num_calls}
