"""Saving and loading a sequence policy: parameters (orbax) plus the JSON that rebuilds it.

A policy folder holds ``params/`` (an orbax checkpoint of the parameter tree) and
``policy.json`` (the :class:`~purejaxpo.lm.model.TransformerConfig`, the task it was trained
on, and free-form metadata such as the training config and results), so a policy trained by one
command is loaded by the next from the folder alone.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping, NamedTuple

import jax

from purejaxpo.lm.model import MODEL_KINDS, TransformerConfig, init_params

POLICY_JSON = "policy.json"


class Policy(NamedTuple):
    params: Any
    model: TransformerConfig
    task: str
    task_args: dict[str, Any]
    meta: dict[str, Any]
    kind: str = "policy"  # a key of MODEL_KINDS: "policy" or "reward_model"


def save_policy(directory: str, params, model: TransformerConfig, *, task: str,
                task_args: Mapping[str, Any] | None = None,
                meta: Mapping[str, Any] | None = None, kind: str = "policy") -> None:
    """Writes ``params`` and ``policy.json`` to ``directory`` (replacing an earlier policy).

    ``kind`` is ``"policy"`` (a :class:`~purejaxpo.lm.model.Transformer`) or ``"reward_model"``
    (a :class:`~purejaxpo.lm.model.RewardModel`).
    """
    import orbax.checkpoint as ocp

    if kind not in MODEL_KINDS:
        raise ValueError(f"kind={kind!r} is invalid: must be one of {tuple(MODEL_KINDS)}")
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    params_dir = os.path.join(directory, "params")
    if os.path.exists(params_dir):
        shutil.rmtree(params_dir)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(params_dir, jax.device_get(params))
    checkpointer.wait_until_finished()
    info = {"kind": kind, "model": model.to_dict(), "task": task, "task_args": dict(task_args or {}),
            "meta": dict(meta or {})}
    tmp = os.path.join(directory, POLICY_JSON + ".tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2, default=str)
    os.replace(tmp, os.path.join(directory, POLICY_JSON))


def load_policy(directory: str, kind: str | None = "policy") -> Policy:
    """Reads a folder written by :func:`save_policy`; ``ValueError`` if it is not one, or if
    it holds another ``kind`` of model (None accepts any)."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    info_path = os.path.join(directory, POLICY_JSON)
    if not os.path.isfile(info_path):
        raise ValueError(f"init={directory!r} is not a saved policy: {POLICY_JSON} is missing "
                         "(write one with `purejaxpo lm sft --out DIR`)")
    with open(info_path) as f:
        info = json.load(f)
    saved_kind = info.get("kind", "policy")
    if kind is not None and saved_kind != kind:
        raise ValueError(f"{directory!r} holds a {saved_kind}, not a {kind}")
    model = TransformerConfig.from_dict(info["model"])
    abstract = jax.eval_shape(lambda key: init_params(key, model, saved_kind),
                              jax.random.PRNGKey(0))
    params = ocp.StandardCheckpointer().restore(os.path.join(directory, "params"), abstract)
    return Policy(params, model, info["task"], info.get("task_args", {}), info.get("meta", {}),
                  saved_kind)
