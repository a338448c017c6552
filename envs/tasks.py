"""Language-model tasks by name: the synthetic ones (:mod:`purejaxpo.envs.sequence_tasks`) and
prompts from a file (:mod:`purejaxpo.envs.prompt_data`)."""

from __future__ import annotations

import dataclasses
import difflib

from purejaxpo.envs.prompt_data import PromptData
from purejaxpo.envs.sequence_tasks import AdditionTask, MultiplyTask, SequenceTask, SortingTask

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
