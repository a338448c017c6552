"""Tools the policy calls inside the compiled rollout: a call's tokens in, result tokens out.

A tool is a pure JAX function on one sequence's call, ``fn(call [C] int32, length [] int32)
-> (result [M] int32, length [] int32, ok [] bool)``, with fixed budgets ``C``
(``max_call_tokens``) and ``M`` (``max_result_tokens``). During sampling
(:func:`purejaxpo.lm.sampling.generate` with ``tools=``), a sequence that emits
``call_open`` starts a call; the tokens it emits until ``call_close`` are the call; at
``call_close`` the tool runs and its result, then ``result_close``, are written into the
sequence one token per decoding step (through the KV cache, like sampled tokens, so the
policy attends to them), and decoding continues. A call that is malformed (the tool says
``ok`` false), longer than ``C`` tokens, or beyond ``max_calls`` gets the single ``error``
token as its result; nothing ever raises inside the compiled step.

The result tokens (and their ``result_close``) are observations, not actions:
:class:`~purejaxpo.lm.sampling.Completions` marks them ``observed``, and every loss, KL and
entropy counts only the tokens the policy chose (``mask & ~observed``) while the model still
attends to all of them.

Shapes: ``B`` sequences, ``C`` call tokens, ``M`` result tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

ToolFn = Callable[[Array, Array], tuple[Array, Array, Array]]
"""``(call [C] int32, length [] int32) -> (result [M] int32, length [] int32, ok [] bool)``."""


class Tool(NamedTuple):
    """A pure JAX tool with its token budgets (see the module docstring)."""

    fn: ToolFn
    max_call_tokens: int
    max_result_tokens: int
    name: str = "tool"


@dataclasses.dataclass(frozen=True)
class ToolUse:
    """How a policy calls ``tool``: the token ids the tokenizer reserves, and the call budget.

    Attributes:
      tool: the :class:`Tool`.
      call_open, call_close: the tokens around a call (emitted by the policy).
      result_close: written after each result (an observation).
      error: the whole result of a malformed, overlong or surplus call.
      max_calls: ``K``, calls per completion that run the tool; later ones get ``error``.
    """

    tool: Tool
    call_open: int
    call_close: int
    result_close: int
    error: int
    max_calls: int = 4

    def __post_init__(self):
        ids = (self.call_open, self.call_close, self.result_close, self.error)
        if len(set(ids)) != 4:
            raise ValueError(f"call_open, call_close, result_close, error={ids} are invalid: "
                             "they must be four different tokens")
        for name in ("max_calls",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: must be an integer >= 1")
        for name in ("max_call_tokens", "max_result_tokens"):
            value = getattr(self.tool, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"tool {self.tool.name}: {name}={value!r} is invalid: must "
                                 "be an integer >= 1")

    @property
    def queue_len(self) -> int:
        """Observation tokens one call writes at most: the result and ``result_close``."""
        return self.tool.max_result_tokens + 1


def result_for_call(tools: ToolUse, call: Array, length: Array, overflow: Array,
                    calls_before: Array) -> tuple[Array, Array, Array]:
    """What one closed call writes: ``(queue [M + 1] int32, queue length, malformed bool)``:
    the tool's result then ``result_close``, or ``error`` then ``result_close`` for a call
    the tool refuses, one longer than its budget (``overflow``) or one past ``max_calls``."""
    result, n, ok = tools.tool.fn(call, length)
    m = tools.tool.max_result_tokens
    n = jnp.clip(n, 0, m)
    good = ok & ~overflow & (calls_before < tools.max_calls)
    idx = jnp.arange(m + 1)
    good_queue = jnp.where(idx < n, jnp.pad(result.astype(jnp.int32), (0, 1)),
                           tools.result_close)
    bad_queue = jnp.where(idx == 0, tools.error, tools.result_close)
    queue = jnp.where(good, good_queue, bad_queue).astype(jnp.int32)
    return queue, jnp.where(good, n + 1, 2).astype(jnp.int32), ~(ok & ~overflow)


# -- the calculator ---------------------------------------------------------------------------


def calculator(digit_ids: tuple[int, ...], plus: int, minus: int, times: int, *,
               max_call_tokens: int = 12, max_result_tokens: int = 8) -> Tool:
    """Integer ``+ - *`` (``*`` binds tighter) over the digit tokens ``digit_ids`` (``"0"`` ..
    ``"9"``): e.g. the call ``4 5 6 * 7 8 + 9`` returns the tokens of ``35577``, most
    significant digit first, ``-`` in front of a negative result.

    Malformed (``ok`` false, never an exception): an empty call, an operator first, last or
    twice in a row, any other token, a number of more than 6 digits, or a result that does
    not fit ``max_result_tokens`` tokens (or int32).
    """
    digits = jnp.asarray(digit_ids, jnp.int32)

    def fn(call: Array, length: Array):
        c = call.shape[0]
        pos = jnp.arange(c)
        live = pos < length
        is_digit = jnp.any(call[:, None] == digits[None, :], axis=1) & live
        value = jnp.argmax(call[:, None] == digits[None, :], axis=1).astype(jnp.int32)
        is_op = ((call == plus) | (call == minus) | (call == times)) & live
        bad_token = live & ~is_digit & ~is_op

        def step(carry, x):
            acc, term, num, ndig, sign, ok, accf, termf = carry
            tok, dig, d, op, alive = x
            # A digit extends the number; an operator closes it.
            new_num = jnp.where(dig, num * 10 + d, num)
            new_ndig = jnp.where(dig, ndig + 1, ndig)
            closes = op & alive
            ok = ok & ~(closes & (ndig == 0)) & (new_ndig <= 6)
            factor = term * num
            factorf = termf * num.astype(jnp.float32)
            is_times = tok == times
            acc2 = jnp.where(closes & ~is_times, acc + sign * factor, acc)
            accf2 = jnp.where(closes & ~is_times, accf + sign * factorf, accf)
            term2 = jnp.where(closes, jnp.where(is_times, factor, 1), term)
            termf2 = jnp.where(closes, jnp.where(is_times, factorf, 1.0), termf)
            sign2 = jnp.where(closes & ~is_times, jnp.where(tok == minus, -1, 1), sign)
            num2 = jnp.where(closes, 0, new_num)
            ndig2 = jnp.where(closes, 0, new_ndig)
            return (acc2, term2, num2, ndig2, sign2, ok, accf2, termf2), None

        init = (jnp.int32(0), jnp.int32(1), jnp.int32(0), jnp.int32(0), jnp.int32(1),
                jnp.bool_(True), jnp.float32(0), jnp.float32(1))
        (acc, term, num, ndig, sign, ok, accf, termf), _ = jax.lax.scan(
            step, init, (call, is_digit, value, is_op, live))
        total = acc + sign * term * num
        totalf = accf + sign * termf * num.astype(jnp.float32)
        ok = ok & (ndig > 0) & (length > 0) & ~jnp.any(bad_token) & (jnp.abs(totalf) < 2e9)
        # Digits of |total|, most significant first, then a leading minus.
        mag = jnp.abs(total)
        powers = 10 ** jnp.arange(9, -1, -1, dtype=jnp.int32)  # 10 places cover int32
        dig = (mag // powers) % 10
        first = jnp.argmax((dig > 0) | (jnp.arange(10) == 9))  # keep one 0 for 0
        ndigits = 10 - first
        negative = total < 0
        n = ndigits + negative.astype(jnp.int32)
        m = max_result_tokens
        out_pos = jnp.arange(m)
        src = first + out_pos - negative.astype(jnp.int32)
        tokens = jnp.where(negative & (out_pos == 0), minus,
                           digits[dig[jnp.clip(src, 0, 9)]])
        tokens = jnp.where(out_pos < n, tokens, 0).astype(jnp.int32)
        ok = ok & (n <= m)
        return tokens, n.astype(jnp.int32), ok

    return Tool(fn, max_call_tokens, max_result_tokens, "calculator")


# -- tools by name (tasks name theirs: MultiplyTask(tools="calculator")) ----------------------


def calculator_for(task) -> ToolUse:
    """The calculator on a task whose tokenizer has the digits, ``+ - *`` and the tool tokens
    (``<call> </call> </result> <err>``), with the task's ``max_calls``."""
    tok = task.tokenizer
    tool = calculator(tuple(tok.id(str(d)) for d in range(10)), tok.id("+"), tok.id("-"),
                      tok.id("*"))
    return ToolUse(tool, call_open=tok.id("<call>"), call_close=tok.id("</call>"),
                   result_close=tok.id("</result>"), error=tok.id("<err>"),
                   max_calls=getattr(task, "max_calls", 2))


TOOLS: dict[str, Callable] = {"calculator": calculator_for}
"""Tool factories by name, ``factory(task) -> ToolUse``; a task's ``tools`` option names one."""


def register_tool(name: str, factory: Callable) -> None:
    """Makes ``factory(task) -> ToolUse`` available as ``tools=name`` to tasks that take tools
    (register it in the script that trains, before building the config)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name={name!r} is invalid: a non-empty string")
    if not callable(factory):
        raise ValueError(f"factory={factory!r} is invalid: must be callable (task -> ToolUse)")
    TOOLS[name] = factory
