"""What a checkpoint holds on disk: leaf names, the metadata, format migration.

A state is stored as ``{path: leaf}`` (:func:`flatten_state`), each leaf under its tree path
(:func:`leaf_path`: ``params/actor/params/Dense_0/kernel``, ``opt_state/1/0/mu/actor/...``,
``env/env_state/obs_rms/mean``, ``key``, ...), so any optax or env state round-trips. Restoring
(:func:`restore_state`) checks every saved leaf against the tree the run expects (the same
paths, and at each path the same shape and dtype) and refuses a checkpoint of another config or
version with a ``ValueError`` naming the first leaf that does not fit.

On-disk formats (``meta["format"]``, :data:`FORMAT`):

* 2 (written now): leaves keyed by tree path; paths renamed since (:data:`RENAMED`) are moved
  to their new names when read.
* 1 (read only): leaves keyed by position (``leaf_00000``, ...) in the order of
  ``jax.tree_util.tree_leaves``. Read by position, with the same count, shape and dtype check;
  an error names the leaf's index and the path expected there.

Nothing here touches orbax or the file system (:mod:`purejaxpo.checkpoint.store` does).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

CONFIG_FILE = "config.json"
"""The file at the top of a checkpoint directory with the run's static description
(:func:`describe`), so the policy can be rebuilt from the directory alone."""
FORMAT = 2
"""The on-disk format written: 2 keys each state leaf by its tree path; 1 (read only) by position."""
POSITIONAL_FORMAT = 1


def describe(algo: str, config, **extra) -> dict[str, Any]:
    """The JSON-ready static description saved with every checkpoint (its ``meta`` and the
    directory's ``config.json``): the format, the algorithm's name (a key of
    ``purejaxpo.algos.ALGORITHMS`` or an LM trainer's), ``config.to_dict()`` and ``extra``
    (``batch_shape``, seeds, ...)."""
    return {"format": FORMAT, "algo": algo, "config": config.to_dict(), **extra}


def _key_name(entry) -> str:
    """One step of a tree path as text: a dict key, a field name or a sequence index."""
    tu = jax.tree_util
    if isinstance(entry, tu.DictKey):
        return str(entry.key)
    if isinstance(entry, tu.GetAttrKey):
        return entry.name
    if isinstance(entry, tu.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, tu.FlattenedIndexKey):
        return str(entry.key)
    raise TypeError(f"unsupported pytree key {entry!r} ({type(entry).__name__})")


def leaf_path(path) -> str:
    """The name a leaf is stored under: its ``tree_flatten_with_path`` keys joined by ``/``.

    ``DictKey`` gives the key, ``GetAttrKey`` (NamedTuple and dataclass fields) the name,
    ``SequenceKey`` the index: e.g. ``opt_state/1/0/mu/actor/params/Dense_0/kernel``.
    """
    return "/".join(_key_name(entry) for entry in path)


def leaf_paths(tree) -> list[tuple[str, Any]]:
    """``(path, leaf)`` for every leaf of ``tree``, in ``tree_leaves`` order."""
    return [(leaf_path(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def flatten_state(tree) -> dict[str, Any]:
    """``{path: leaf}`` for every leaf of ``tree`` (what a checkpoint stores; format 2)."""
    flat: dict[str, Any] = {}
    for path, leaf in leaf_paths(tree):
        if path in flat:
            raise ValueError(f"two leaves of the state have the same path {path!r}")
        flat[path] = leaf
    return flat


def positional_name(index: int) -> str:
    """The name of leaf ``index`` in a format-1 (positional) checkpoint: ``leaf_00000``, ..."""
    return f"leaf_{index:05d}"


def _is_positional(flat: Mapping[str, Any]) -> bool:
    return bool(flat) and all(
        k.startswith("leaf_") and k[5:].isdigit() and len(k) == 10 for k in flat)


def _spec(x) -> str:
    return f"shape {tuple(np.shape(x))} dtype {np.dtype(x.dtype).name}"


def _fits(got, want) -> bool:
    return (tuple(np.shape(got)) == tuple(want.shape)
            and np.dtype(got.dtype) == np.dtype(want.dtype))


RENAMED = (("actor/params/MLP_0/", "actor/params/"), ("/PatchConv_", "/Conv_"))
"""Parameter paths that changed, ``(old, new)`` path fragments: a Gaussian actor's layers were
nested in an ``MLP_0`` module before policies were built from parts; a CNN torso's convolutions
were named ``PatchConv_i`` before they became ``flax.linen.Conv`` layers (``Conv_i``, the same
parameters) with the CPU backend's patch convolution behind a hook. The values are the same
layers; format 1 checkpoints, by position, were not affected."""


def _renamed(flat: Mapping[str, Any], wanted) -> dict[str, Any]:
    """``flat`` with each saved path that the run does not have, but has under its new name
    (:data:`RENAMED`), moved there."""
    out = dict(flat)
    for path in list(out):
        if path in wanted:
            continue
        new = path
        for old_part, new_part in RENAMED:
            new = new.replace(old_part, new_part)
        if new != path and new in wanted and new not in out:
            out[new] = out.pop(path)
    return out


def restore_state(abstract, flat: Mapping[str, Any], fmt: int = FORMAT, *, where: str = "the checkpoint"):
    """The state tree of ``abstract`` filled from a checkpoint's leaves, after checking them.

    Args:
      abstract: the tree the run expects (``jax.eval_shape`` of its ``init``): structure,
        shapes and dtypes.
      flat: the saved leaves, ``{path: array}`` (format 2) or ``{"leaf_00000": array, ...}``
        (format 1).
      fmt: the checkpoint's format (``meta["format"]``).
      where: how error messages name the checkpoint.

    Raises:
      ValueError: a saved leaf is missing, unexpected, or of another shape or dtype than the
        run's; the message names the first such leaf (its path, or for format 1 its index and
        the path expected there) and both shapes and dtypes.
    """
    expected = leaf_paths(abstract)
    treedef = jax.tree_util.tree_structure(abstract)
    if fmt > FORMAT:
        raise ValueError(f"{where} has format {fmt}, newer than this version of purejaxpo "
                         f"reads (format <= {FORMAT})")
    if fmt == POSITIONAL_FORMAT:
        if flat and not _is_positional(flat):
            raise ValueError(f"{where} says format 1 but its leaves are not named leaf_00000, ...")
        if len(flat) != len(expected):
            raise ValueError(f"{where} does not fit this run: it holds {len(flat)} leaves "
                             f"(format 1, stored by position), the run's state has "
                             f"{len(expected)}")
        leaves = []
        for i, (path, want) in enumerate(expected):
            got = flat.get(positional_name(i))
            if got is None:
                raise ValueError(f"{where} does not fit this run: leaf {i} "
                                 f"({positional_name(i)}, expected path {path!r}) is missing")
            if not _fits(got, want):
                raise ValueError(f"{where} does not fit this run: leaf {i} (format 1, stored by "
                                 f"position; the run expects path {path!r} there) has "
                                 f"{_spec(got)} in the checkpoint, the run expects {_spec(want)}")
            leaves.append(jnp.asarray(got))
        return jax.tree_util.tree_unflatten(treedef, leaves)

    wanted = {path for path, _ in expected}
    flat = _renamed(flat, wanted)
    problems = []
    for path, want in expected:
        if path not in flat:
            problems.append(f"leaf {path!r} ({_spec(want)}) is missing from the checkpoint")
        elif not _fits(flat[path], want):
            problems.append(f"leaf {path!r} has {_spec(flat[path])} in the checkpoint, the run "
                            f"expects {_spec(want)}")
    for path in sorted(set(flat) - wanted):
        problems.append(f"the checkpoint has an unexpected leaf {path!r} ({_spec(flat[path])}) "
                        f"that the run's state does not have")
    if problems:
        more = f" (and {len(problems) - 1} more mismatching leaves)" if len(problems) > 1 else ""
        raise ValueError(f"{where} does not fit this run: {problems[0]}{more}")
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(flat[path]) for path, _ in expected])


def batched(abstract, batch_shape):
    """``abstract`` with ``batch_shape`` leading axes on every leaf."""
    batch_shape = tuple(batch_shape)
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((*batch_shape, *x.shape), x.dtype), abstract)


def format_of(meta: Mapping[str, Any], flat: Mapping[str, Any]) -> int:
    """The on-disk format of a checkpoint with ``meta`` and leaves ``flat`` (told by the leaf
    names when ``meta`` has no ``format``)."""
    fmt = meta.get("format")
    if fmt is None:  # a caller's meta without describe(): tell by the names
        return POSITIONAL_FORMAT if _is_positional(flat) else FORMAT
    return int(fmt)


def mismatch(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """The first difference of two checkpoints' metadata that makes one run not the
    other (algorithm, batch shape or a config field), as text; None when they match."""
    for name in ("algo", "batch_shape"):
        if name in wanted and saved.get(name) != wanted[name]:
            return f"{name} {saved.get(name)!r} != {wanted[name]!r}"
    old, new = saved.get("config", {}), wanted.get("config", {})
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            return f"config.{name} {old.get(name)!r} != {new.get(name)!r}"
    return None
