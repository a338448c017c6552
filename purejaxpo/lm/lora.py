"""LoRA adapters (Hu et al. 2021) on the transformer's projections: the default way to train a
loaded pretrained model.

A projection ``y = x W (+ b)`` with an adapter computes ``y = x W (+ b) + (alpha / r) x A B``,
``A`` ``[in, r]`` (random), ``B`` ``[r, out]`` (zeros, so a fresh adapter changes nothing). The
adapters live in the same parameter tree as the weights they adapt (``lora_a``, ``lora_b``
beside ``kernel``), switched on by the model's ``lora_rank`` (see
:class:`~purejaxpo.lm.model.TransformerConfig`), so every trainer, sampler and checkpoint
handles them unchanged; :func:`train_adapters_only` makes the optimiser update the adapters
alone (the base weights get no update and no optimiser state, and XLA drops their unused
gradients), and the reference model is free: :func:`adapters_off` (the base weights, shared,
with the adapters zeroed).

    model, params = add_adapters(key, params, model, rank=8, alpha=16)
    ...  # train: only lora_a / lora_b move
    merged, base_model = merge_adapters(params, model)   # plain weights, e.g. for save_pretrained
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import optax

from purejaxpo.lm.model import TransformerConfig, init_params

LORA_LEAVES = ("lora_a", "lora_b")
TARGETS = ("q", "k", "v", "qkv", "attn_out", "mlp_gate", "mlp_in", "mlp_out")
"""The projections an adapter may target (``lora_targets``), by their parameter names."""


def _path_names(path) -> list[str]:
    return [getattr(p, "key", getattr(p, "name", str(p))) for p in path]


HEADS = ("value", "score")
"""Heads put on top of a (pretrained) trunk, which train together with the adapters: the PPO
critic's ``value`` head and the reward model's ``score``."""


def is_adapter(path) -> bool:
    """Whether a leaf's key path ends in an adapter matrix."""
    return bool(path) and _path_names(path)[-1] in LORA_LEAVES


def is_trainable(path) -> bool:
    """Whether a leaf trains when the parameters have adapters: the adapters and the heads on
    top of the trunk (:data:`HEADS`); the base weights stay frozen."""
    return is_adapter(path) or any(name in HEADS for name in _path_names(path))


def has_adapters(params) -> bool:
    return any(is_adapter(p) for p, _ in jax.tree_util.tree_leaves_with_path(params))


def add_adapters(key, params, model: TransformerConfig, *, rank: int = 8, alpha: float = 16.0,
                 targets: tuple[str, ...] = ("q", "k", "v", "attn_out")):
    """``(model with adapters, params with fresh adapters)``: ``params`` (e.g. loaded by
    :func:`~purejaxpo.lm.pretrained.load_pretrained`) are kept as they are (shared, not
    copied) and adapters of ``rank`` are added to the ``targets`` projections; the new model
    computes exactly what the old one did until the adapters train.

    Raises:
      ValueError: naming ``rank``, ``alpha`` or a target that is unknown or not in the model.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank={rank!r} is invalid: must be an integer >= 1")
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r} is invalid: must be > 0")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"targets={targets!r} is invalid: each must be one of {TARGETS}")
    new_model = dataclasses.replace(model, lora_rank=rank, lora_alpha=float(alpha),
                                    lora_targets=tuple(targets))
    shapes = jax.eval_shape(lambda: init_params(key, new_model))  # structure only
    present = {names[-2] for path, _ in jax.tree_util.tree_leaves_with_path(shapes)
               if (names := _path_names(path))[-1] == "lora_a"}
    missing = [t for t in targets if t not in present]
    if missing:
        raise ValueError(f"targets={targets!r} is invalid: {missing} are not projections of "
                         "this model (grouped-query models have q, k, v; the small one qkv)")
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    keys = iter(jax.random.split(key, len(leaves)))

    def pick(path, shape):
        names = _path_names(path)
        k = next(keys)
        if names[-1] == "lora_a":  # as the module's own init: normal, std 1 / sqrt(in)
            return jax.random.normal(k, shape.shape, shape.dtype) / jnp.sqrt(shape.shape[0])
        if names[-1] == "lora_b":
            return jnp.zeros(shape.shape, shape.dtype)
        old = params
        for name in names:
            old = old[name]
        return old

    return new_model, jax.tree_util.tree_map_with_path(pick, shapes)


def adapters_off(params):
    """``params`` with every ``lora_b`` zeroed: the base model (the reference), sharing the
    base weights. Because training moves only the adapters (:func:`train_adapters_only`) and
    a fresh adapter is zero, this is exactly the model training started from, at every step:
    the reference costs no memory (:class:`~purejaxpo.lm.common.FromParams`)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.zeros_like(x) if _path_names(p)[-1] == "lora_b" else x, params)


def merge_adapters(params, model: TransformerConfig):
    """``(params, model)`` without adapters: each adapted kernel becomes
    ``W + (alpha / r) A B`` (for :func:`~purejaxpo.lm.pretrained.save_pretrained`, or
    faster sampling)."""
    if not model.lora_rank:
        return params, model
    scale = model.lora_alpha / model.lora_rank

    def merge(node):
        if not isinstance(node, dict):
            return node
        if "lora_a" in node:
            out = {k: v for k, v in node.items() if k not in LORA_LEAVES}
            out["kernel"] = node["kernel"] + scale * (node["lora_a"] @ node["lora_b"])
            return out
        return {k: merge(v) for k, v in node.items()}

    default_alpha = TransformerConfig.__dataclass_fields__["lora_alpha"].default
    return merge(jax.tree_util.tree_map(lambda x: x, params)), dataclasses.replace(
        model, lora_rank=0, lora_alpha=default_alpha, lora_targets=())


def train_adapters_only(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` on the adapters (and heads, :func:`is_trainable`) alone where the parameters
    have adapters (the base weights get zero updates and no optimiser state, and ``tx``'s
    gradient clipping sees only what trains); exactly ``tx`` where they have none (so the
    state of a model without adapters is unchanged)."""

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda p, _: "train" if is_trainable(p) else "freeze", params)

    masked = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)

    def init(params):
        return masked.init(params) if has_adapters(params) else tx.init(params)

    def update(updates, state, params=None):
        if has_adapters(updates):
            return masked.update(updates, state, params)
        return tx.update(updates, state, params)

    return optax.GradientTransformation(init, update)


def count_adapter_params(params) -> tuple[int, int]:
    """``(adapter parameters, all parameters)``."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    total = sum(int(x.size) for _, x in leaves)
    return sum(int(x.size) for p, x in leaves if is_adapter(p)), total

