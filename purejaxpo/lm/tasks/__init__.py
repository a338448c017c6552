"""Language-model tasks: prompts with their answers and rewards, the data that GRPO, PPO, SFT
and evaluation sample from (datasets with rewards, not environments: nothing steps).

* :mod:`purejaxpo.lm.tasks.sequence`: the synthetic tasks (addition, sorting, multiplication
  with tool traces), their word-level tokenizer and JAX rewards, and the task interface
  (:class:`SequenceTask`, :class:`TaskBatch`, :data:`RewardFn`).
* :mod:`purejaxpo.lm.tasks.prompt_data`: prompts and answers from a JSON-lines file, tokenized by
  a Hugging Face ``tokenizer.json``, with rewards on tokens or on text.
* :func:`make_task`: any of them by name (:data:`TASKS`).
"""

from __future__ import annotations

import dataclasses
import difflib

from purejaxpo.lm.tasks.prompt_data import PromptData, TokenizerFile, load_reward, text_reward
from purejaxpo.lm.tasks.sequence import (
    AdditionTask,
    MultiplyTask,
    RewardFn,
    SequenceTask,
    SortingTask,
    TaskBatch,
    Tokenizer,
)

TASKS: dict[str, type] = {"addition": AdditionTask, "sorting": SortingTask,
                          "multiply": MultiplyTask, "jsonl": PromptData}
"""Every task by name (``jsonl``: prompts and answers from a JSON-lines file)."""


def make_task(name: str, **kwargs) -> SequenceTask:
    """The task ``name`` (``addition``, ``sorting``, ``multiply``, or ``jsonl`` with ``path``
    and ``model``) with options such as ``digits=3``; ``ValueError`` naming an unknown task
    or option."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=2, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"task={name!r} is not a known task.{hint} Valid tasks: "
                         f"{', '.join(TASKS)}.")
    cls = TASKS[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"tokenizer"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for task {name!r}; valid: {sorted(fields)}")
    return cls(**kwargs)


__all__ = [
    "TASKS",
    "make_task",
    "SequenceTask",
    "TaskBatch",
    "RewardFn",
    "Tokenizer",
    "AdditionTask",
    "SortingTask",
    "MultiplyTask",
    "PromptData",
    "TokenizerFile",
    "load_reward",
    "text_reward",
]
