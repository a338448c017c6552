"""A decoder-only transformer policy for sequences, with an explicit (functional) KV cache.

The same module serves three uses:

* training forward passes over whole sequences (teacher forcing, log-probs of completions);
* prefilling a prompt into a KV cache;
* one-token decoding steps that read and extend the cache (:mod:`purejaxpo.lm.sampling`).

The cache is a plain pytree (:class:`KVCache`) passed in and returned, never hidden module
state, so sampling is a pure function that ``jit``, ``lax.scan`` and ``vmap`` handle.

Shapes: ``B`` sequences, ``L`` tokens in this call, ``S`` cache slots (the context length),
``H`` heads, ``D`` head width, ``V`` vocabulary.

Padding: every call takes ``valid`` ``[B, L]`` (false on pad tokens). Pad tokens are never
attended to, so prompts may be left-padded to a common length; positions (for RoPE or learned
position embeddings) count only valid tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

POSITION_KINDS = ("rope", "learned")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of :class:`Transformer` (all fields shape-defining, hence static).

    Attributes:
      vocab_size: number of token ids.
      num_layers: transformer blocks.
      width: model width (embedding size); must be divisible by ``num_heads``.
      num_heads: attention heads.
      mlp_ratio: hidden width of each block's MLP as a multiple of ``width``.
      max_len: context length (prompt plus completion); the KV cache has this many slots.
      positions: ``"rope"`` (rotary, Su et al. 2021) or ``"learned"`` (GPT-2 style).
      tie_embeddings: output logits use the input embedding matrix (as GPT-2 does).
    """

    vocab_size: int
    num_layers: int = 4
    width: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    max_len: int = 32
    positions: str = "rope"
    tie_embeddings: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "num_layers", "width", "num_heads", "mlp_ratio", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.width % self.num_heads:
            raise ValueError(
                f"width must be divisible by num_heads, got width={self.width}, "
                f"num_heads={self.num_heads}")
        if self.positions == "rope" and (self.width // self.num_heads) % 2:
            raise ValueError(
                f"width / num_heads must be even for rope positions, got "
                f"{self.width // self.num_heads}")
        if self.positions not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got {self.positions!r}")

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TransformerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TransformerConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)


class KVCache(NamedTuple):
    """Keys and values of every layer for ``S`` slots.

    Attributes:
      k, v: ``[num_layers, B, S, H, D]``.
      valid: ``[B, S]``, true where a slot holds a real (non-pad) token (its row sum is the
        next token's position).
      index: scalar int32, the next slot to write (the same for every sequence).
    """

    k: Array
    v: Array
    valid: Array
    index: Array


def init_cache(config: TransformerConfig, batch: int, dtype=jnp.float32) -> KVCache:
    """An empty cache for ``batch`` sequences of up to ``config.max_len`` tokens."""
    shape = (config.num_layers, batch, config.max_len, config.num_heads, config.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
        valid=jnp.zeros((batch, config.max_len), bool), index=jnp.zeros((), jnp.int32))


def positions_from_valid(valid: Array, start: Array | None = None) -> Array:
    """Position of each token: the number of valid tokens before it (plus ``start`` ``[B]``)."""
    pos = jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1
    pos = jnp.maximum(pos, 0)
    return pos if start is None else pos + start[:, None]


def _rope(x: Array, positions: Array) -> Array:
    """Rotary position embedding of ``x`` ``[B, L, H, D]`` at ``positions`` ``[B, L]``."""
    d = x.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, L, D/2]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class _Block(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x, positions, mask, layer_cache):
        """``x`` ``[B, L, W]``; ``mask`` ``[B, L, S']`` (may the query attend to the key);
        ``layer_cache`` None or ``(k, v, index)`` with ``k, v`` ``[B, S, H, D]``."""
        cfg = self.config
        init = nn.initializers.normal(0.02)
        # GPT-2's scaled init of the residual projections keeps deep stacks stable.
        out_init = nn.initializers.normal(0.02 / math.sqrt(2 * cfg.num_layers))
        b, length, _ = x.shape

        h = nn.LayerNorm(name="ln_attn")(x)
        qkv = nn.Dense(3 * cfg.width, kernel_init=init, name="qkv")(h)
        q, k, v = jnp.split(qkv.reshape(b, length, 3 * cfg.num_heads, cfg.head_dim), 3, axis=2)
        if cfg.positions == "rope":
            q, k = _rope(q, positions), _rope(k, positions)
        if layer_cache is not None:
            cache_k, cache_v, index = layer_cache
            k = jax.lax.dynamic_update_slice_in_dim(cache_k, k.astype(cache_k.dtype), index, 1)
            v = jax.lax.dynamic_update_slice_in_dim(cache_v, v.astype(cache_v.dtype), index, 1)
        scores = jnp.einsum("blhd,bshd->bhls", q, k) / math.sqrt(cfg.head_dim)
        scores = jnp.where(mask[:, None], scores, jnp.finfo(scores.dtype).min)
        attn = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhls,bshd->blhd", attn, v).reshape(b, length, cfg.width)
        x = x + nn.Dense(cfg.width, kernel_init=out_init, name="attn_out")(out)

        h = nn.LayerNorm(name="ln_mlp")(x)
        h = nn.gelu(nn.Dense(cfg.mlp_ratio * cfg.width, kernel_init=init, name="mlp_in")(h))
        x = x + nn.Dense(cfg.width, kernel_init=out_init, name="mlp_out")(h)
        return x, (k, v)


class Transformer(nn.Module):
    """Decoder-only transformer (pre-LayerNorm, GELU MLP), returning next-token logits.

    ``apply(params, tokens, valid)`` runs a full causal pass over ``tokens`` ``[B, L]`` and
    returns ``(logits [B, L, V], None)``. ``apply(params, tokens, valid, cache=cache)`` writes
    the ``L`` new tokens into ``cache`` at ``cache.index`` and attends to everything cached so
    far; it returns ``(logits [B, L, V], new_cache)``.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: Array, valid: Array, cache: KVCache | None = None, *,
                 return_hidden: bool = False, also_hidden: bool = False):
        """Logits ``[B, L, V]`` (or, with ``return_hidden``, the final normalised hidden states
        ``[B, L, W]``; with ``also_hidden``, both as ``(logits, hidden)`` from the one pass)
        and the updated cache (None without a cache)."""
        cfg = self.config
        b, length = tokens.shape
        embed = nn.Embed(cfg.vocab_size, cfg.width,
                         embedding_init=nn.initializers.normal(0.02), name="embed")
        start = None if cache is None else jnp.sum(cache.valid, axis=-1, dtype=jnp.int32)
        positions = positions_from_valid(valid, start)
        x = embed(tokens)
        if cfg.positions == "learned":
            pos_embed = nn.Embed(cfg.max_len, cfg.width,
                                 embedding_init=nn.initializers.normal(0.01), name="pos_embed")
            x = x + pos_embed(jnp.minimum(positions, cfg.max_len - 1))

        if cache is None:
            key_valid = valid
            causal = jnp.tril(jnp.ones((length, length), bool))
            mask = causal[None] & key_valid[:, None, :]
        else:
            key_valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, valid, cache.index, 1)
            query_slot = cache.index + jnp.arange(length)
            key_slot = jnp.arange(cfg.max_len)
            mask = (key_slot[None, :] <= query_slot[:, None])[None] & key_valid[:, None, :]
        # A pad query attends to nothing valid; let it see itself so softmax stays finite (its
        # output is never used).
        mask = mask | (~valid)[:, :, None]

        new_k, new_v = [], []
        for i in range(cfg.num_layers):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i], cache.index)
            x, (k, v) = _Block(cfg, name=f"block_{i}")(x, positions, mask, layer_cache)
            new_k.append(k)
            new_v.append(v)
        x = nn.LayerNorm(name="ln_final")(x)
        if return_hidden:
            logits = x
        elif cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = nn.Dense(cfg.vocab_size, use_bias=False,
                              kernel_init=nn.initializers.normal(0.02), name="head")(x)
        if also_hidden and not return_hidden:
            logits = (logits, x)
        if cache is None:
            return logits, None
        new_cache = KVCache(
            k=jnp.stack(new_k), v=jnp.stack(new_v), valid=key_valid, index=cache.index + length)
        return logits, new_cache


class RewardModel(nn.Module):
    """A transformer trunk and a linear scalar head read at each sequence's last valid token.

    ``apply(params, tokens [B, L], valid [B, L]) -> [B]`` scores; trained with the
    Bradley-Terry loss on preference pairs (:mod:`purejaxpo.lm.reward_model`).
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: Array, valid: Array) -> Array:
        hidden, _ = Transformer(self.config, name="trunk")(tokens, valid, return_hidden=True)
        last = tokens.shape[1] - 1 - jnp.argmax(valid[:, ::-1], axis=1)
        read = hidden[jnp.arange(tokens.shape[0]), last]
        return nn.Dense(1, kernel_init=nn.initializers.normal(0.02), name="score")(read)[:, 0]


class ValueModel(nn.Module):
    """A transformer trunk and a linear value head at every position: the critic of PPO on a
    sequence policy (:mod:`purejaxpo.lm.ppo`).

    ``apply(params, tokens [B, L], valid [B, L]) -> [B, L]``: ``V`` of each prefix (position
    ``t`` has read tokens ``0..t``).
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: Array, valid: Array) -> Array:
        hidden, _ = Transformer(self.config, name="trunk")(tokens, valid, return_hidden=True)
        return nn.Dense(1, kernel_init=nn.initializers.normal(0.02), name="value")(hidden)[..., 0]


MODEL_KINDS = {"policy": Transformer, "reward_model": RewardModel, "value": ValueModel}
"""The kinds of model a parameter tree (and a saved folder) can hold, and their flax module."""


def init_params(key: Array, config: TransformerConfig, kind: str = "policy"):
    """Random parameters of a :class:`Transformer` (or :class:`RewardModel`, or
    :class:`ValueModel`) from ``config``."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind={kind!r} is invalid: must be one of {tuple(MODEL_KINDS)}")
    tokens = jnp.zeros((1, 2), jnp.int32)
    return MODEL_KINDS[kind](config).init(key, tokens, jnp.ones((1, 2), bool))["params"]


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
