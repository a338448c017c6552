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
NORM_KINDS = ("layernorm", "rmsnorm")
MLP_KINDS = ("gelu", "swiglu")
COMPUTE_DTYPES = ("float32", "bfloat16")


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
      norm: ``"layernorm"`` (with bias) or ``"rmsnorm"`` (Llama family).
      norm_eps: the norms' epsilon.
      mlp: ``"gelu"`` (one hidden layer) or ``"swiglu"`` (``down(silu(gate(x)) * up(x))``,
        Llama family, no biases).
      mlp_hidden: the MLP's hidden width; None means ``mlp_ratio * width``.
      num_kv_heads: key/value heads for grouped-query attention (must divide ``num_heads``);
        None keeps the fused ``qkv`` projection of the small model (as many kv heads as
        heads); set (even to ``num_heads``) it uses separate ``q``, ``k``, ``v`` projections.
      qkv_bias: biases on the query/key/value projections (the small model, Qwen2: true).
      out_bias: biases on the attention output and MLP projections (the small model: true).
      rope_theta: RoPE's base.
      rope_scaling: None, or the checkpoint's scaling as ``(("rope_type", "linear"),
        ("factor", f))`` or Llama 3's ``(("rope_type", "llama3"), ("factor", f),
        ("low_freq_factor", l), ("high_freq_factor", h),
        ("original_max_position_embeddings", n))`` (a tuple of pairs: hashable, static).
      lora_rank: rank of the LoRA adapters on the ``lora_targets`` projections (0: none;
        :mod:`purejaxpo.lm.lora`).
      lora_alpha: the adapters' scale is ``lora_alpha / lora_rank``.
      lora_targets: projection names (``q``, ``k``, ``v``, ``qkv``, ``attn_out``,
        ``mlp_gate``, ``mlp_in``, ``mlp_out``).
      compute_dtype: ``"float32"``, or ``"bfloat16"``: activations, matrix products and the
        KV cache in bf16 while the parameters (the optimiser's master weights) stay float32;
        logits come back in float32.
    """

    vocab_size: int
    num_layers: int = 4
    width: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    max_len: int = 32
    positions: str = "rope"
    tie_embeddings: bool = True
    norm: str = "layernorm"
    norm_eps: float = 1e-6
    mlp: str = "gelu"
    mlp_hidden: int | None = None
    num_kv_heads: int | None = None
    qkv_bias: bool = True
    out_bias: bool = True
    rope_theta: float = 10000.0
    rope_scaling: tuple | None = None
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ()
    compute_dtype: str = "float32"

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got "
                             f"{self.compute_dtype!r}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) \
                or self.lora_rank < 0:
            raise ValueError(f"lora_rank must be an integer >= 0, got {self.lora_rank!r}")
        if isinstance(self.rope_scaling, Mapping):
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
        elif self.rope_scaling is not None:
            object.__setattr__(self, "rope_scaling",
                               tuple(tuple(p) for p in self.rope_scaling))
        if self.norm not in NORM_KINDS:
            raise ValueError(f"norm must be one of {NORM_KINDS}, got {self.norm!r}")
        if self.mlp not in MLP_KINDS:
            raise ValueError(f"mlp must be one of {MLP_KINDS}, got {self.mlp!r}")
        if self.num_kv_heads is not None and (
                not isinstance(self.num_kv_heads, int) or self.num_kv_heads < 1
                or self.num_heads % self.num_kv_heads):
            raise ValueError(f"num_kv_heads must divide num_heads={self.num_heads}, got "
                             f"{self.num_kv_heads!r}")
        if self.mlp_hidden is not None and (not isinstance(self.mlp_hidden, int)
                                            or self.mlp_hidden < 1):
            raise ValueError(f"mlp_hidden must be an integer >= 1, got {self.mlp_hidden!r}")
        if self.rope_scaling is not None:
            kind = dict(self.rope_scaling).get("rope_type")
            if kind not in ("linear", "llama3"):
                raise ValueError(f"rope_scaling: rope_type {kind!r} is not supported (linear, "
                                 "llama3)")
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

    @property
    def dtype(self):
        """The compute dtype as a jnp dtype."""
        return jnp.dtype(self.compute_dtype)

    @property
    def kv_heads(self) -> int:
        """Key/value heads (``num_kv_heads``, or ``num_heads`` when None)."""
        return self.num_kv_heads or self.num_heads

    @property
    def hidden(self) -> int:
        """The MLP's hidden width."""
        return self.mlp_hidden or self.mlp_ratio * self.width

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.rope_scaling is not None:
            out["rope_scaling"] = dict(self.rope_scaling)
        return out

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
      k, v: one ``[B, K, S, D]`` array per layer (``K`` key/value heads; head-major, see
        ``_Block``). Separate arrays, not one stacked ``[num_layers, ...]``: a layer reads
        and updates its own buffer in place, where slicing a stacked cache copied the layer
        out at every decoding step.
      valid: ``[B, S]``, true where a slot holds a real (non-pad) token (its row sum is the
        next token's position).
      index: scalar int32, the next slot to write (the same for every sequence).
    """

    k: Array
    v: Array
    valid: Array
    index: Array


def init_cache(config: TransformerConfig, batch: int, dtype=None,
               slots: int | None = None) -> KVCache:
    """An empty cache for ``batch`` sequences of up to ``slots`` tokens (default
    ``config.max_len``; in the config's compute dtype unless ``dtype`` is given).

    Slots only hold tokens; a token's position comes from the valid tokens before it, so a
    cache of ``prompt + new tokens`` slots gives the same logits as one of ``max_len`` while
    every decoding step reads and writes less (:func:`~purejaxpo.lm.sampling.generate`)."""
    dtype = config.dtype if dtype is None else dtype
    slots = config.max_len if slots is None else slots
    if not 1 <= slots <= config.max_len:
        raise ValueError(f"slots={slots} is invalid: must be in [1, max_len={config.max_len}]")
    shape = (batch, config.kv_heads, slots, config.head_dim)
    layers = range(config.num_layers)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in layers),
        v=tuple(jnp.zeros(shape, dtype) for _ in layers),
        valid=jnp.zeros((batch, slots), bool), index=jnp.zeros((), jnp.int32))


def positions_from_valid(valid: Array, start: Array | None = None) -> Array:
    """Position of each token: the number of valid tokens before it (plus ``start`` ``[B]``)."""
    pos = jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1
    pos = jnp.maximum(pos, 0)
    return pos if start is None else pos + start[:, None]


def rope_frequencies(head_dim: int, theta: float = 10000.0, scaling: tuple | None = None):
    """RoPE's inverse frequencies ``[head_dim / 2]`` (NumPy float64, then float32), with
    the checkpoint's scaling (``linear``: divided by ``factor``; ``llama3``: Llama 3.1's
    wavelength-dependent interpolation)."""
    import numpy as np

    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if scaling is not None:
        s = dict(scaling)
        factor = float(s["factor"])
        if s["rope_type"] == "linear":
            inv = inv / factor
        else:  # llama3, as transformers' _compute_llama3_parameters
            low, high = float(s["low_freq_factor"]), float(s["high_freq_factor"])
            old = float(s["original_max_position_embeddings"])
            low_wavelen, high_wavelen = old / low, old / high
            wavelen = 2 * np.pi / inv
            scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
            smooth = (old / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
            inv = np.where(medium, smoothed, scaled)
    return inv.astype(np.float32)


def _rope(x: Array, positions: Array, inv_freq=None) -> Array:
    """Rotary position embedding of ``x`` ``[B, L, H, D]`` at ``positions`` ``[B, L]``
    (``inv_freq`` from :func:`rope_frequencies`; default theta 10000)."""
    d = x.shape[-1]
    if inv_freq is None:
        inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, L, D/2]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class _LoRADense(nn.Module):
    """``nn.Dense`` (same ``kernel`` / ``bias``) plus a LoRA adapter ``(alpha / r) x A B``."""

    features: int
    use_bias: bool
    kernel_init: Any
    rank: int
    scale: float

    @nn.compact
    def __call__(self, x):
        dt = x.dtype
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        y = jnp.dot(x, kernel.astype(dt))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(dt)
        a = self.param("lora_a", nn.initializers.normal(1.0 / math.sqrt(x.shape[-1])),
                       (x.shape[-1], self.rank))
        b = self.param("lora_b", nn.initializers.zeros, (self.rank, self.features))
        return y + self.scale * jnp.dot(jnp.dot(x, a.astype(dt)), b.astype(dt))


def _dense(cfg: TransformerConfig, features: int, use_bias: bool, kernel_init, name: str):
    """The projection ``name``: with a LoRA adapter where the config targets it."""
    if cfg.lora_rank and name in cfg.lora_targets:
        return _LoRADense(features, use_bias, kernel_init, cfg.lora_rank,
                          cfg.lora_alpha / cfg.lora_rank, name=name)
    return nn.Dense(features, use_bias=use_bias, kernel_init=kernel_init, dtype=cfg.dtype,
                    name=name)


def _norm(cfg: TransformerConfig, name: str) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=cfg.dtype, name=name)
    return nn.LayerNorm(epsilon=cfg.norm_eps, dtype=cfg.dtype, name=name)


class _Block(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x, positions, mask, layer_cache):
        """``x`` ``[B, L, W]``; ``mask`` ``[B, L, S']`` (may the query attend to the key);
        ``layer_cache`` None or ``(k, v, index)``: this layer's cache, ``k, v`` ``[B, K, S,
        D]``.

        Returns ``(x, (k, v))``: with a cache, the layer's cache with its ``L`` new keys and
        values written at ``index`` (a ``dynamic_update_slice`` XLA does in place, so a
        decoding step writes ``L`` slots instead of copying the cache); without, this layer's
        keys and values ``[B, K, L, D]``.

        Keys and values are head-major (``[B, K, S, D]``), so both attention products are
        batched matrix products over ``(B, K)`` with no transpose of the cache: in the other
        layout XLA:CPU copied every layer's cache into this one at every decoding step."""
        cfg = self.config
        init = nn.initializers.normal(0.02)
        # GPT-2's scaled init of the residual projections keeps deep stacks stable.
        out_init = nn.initializers.normal(0.02 / math.sqrt(2 * cfg.num_layers))
        b, length, _ = x.shape
        heads, kv, d = cfg.num_heads, cfg.kv_heads, cfg.head_dim

        h = _norm(cfg, "ln_attn")(x)
        if cfg.num_kv_heads is None:
            qkv = _dense(cfg, 3 * cfg.width, cfg.qkv_bias, init, "qkv")(h)
            q, k, v = jnp.split(qkv.reshape(b, length, 3 * heads, d), 3, axis=2)
        else:
            def proj(n, name):
                return _dense(cfg, n * d, cfg.qkv_bias, init, name)(h).reshape(b, length, n, d)

            q, k, v = proj(heads, "q"), proj(kv, "k"), proj(kv, "v")
        if cfg.positions == "rope":
            inv_freq = jnp.asarray(rope_frequencies(d, cfg.rope_theta, cfg.rope_scaling))
            q, k = _rope(q, positions, inv_freq), _rope(k, positions, inv_freq)
        k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, K, L, D]
        if layer_cache is not None:
            cache_k, cache_v, index = layer_cache
            k = jax.lax.dynamic_update_slice_in_dim(cache_k, k.astype(cache_k.dtype), index, 2)
            v = jax.lax.dynamic_update_slice_in_dim(cache_v, v.astype(cache_v.dtype), index, 2)
        # query heads grouped by their kv head, head-major: [B, K, G, L, D]
        qg = q.reshape(b, length, kv, heads // kv, d).transpose(0, 2, 3, 1, 4)
        scores = jnp.einsum("bkgld,bksd->bkgls", qg, k).astype(jnp.float32) / math.sqrt(d)
        scores = jnp.where(mask[:, None, None], scores, jnp.finfo(scores.dtype).min)
        attn = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # softmax in float32
        out = jnp.einsum("bkgls,bksd->bkgld", attn, v)
        out = out.transpose(0, 3, 1, 2, 4).reshape(b, length, heads * d)
        x = x + _dense(cfg, cfg.width, cfg.out_bias, out_init, "attn_out")(out)

        h = _norm(cfg, "ln_mlp")(x)
        if cfg.mlp == "swiglu":
            gate = _dense(cfg, cfg.hidden, cfg.out_bias, init, "mlp_gate")(h)
            up = _dense(cfg, cfg.hidden, cfg.out_bias, init, "mlp_in")(h)
            h = nn.silu(gate) * up
        else:
            h = nn.gelu(_dense(cfg, cfg.hidden, cfg.out_bias, init, "mlp_in")(h))
        x = x + _dense(cfg, cfg.width, cfg.out_bias, out_init, "mlp_out")(h)
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
        embed = nn.Embed(cfg.vocab_size, cfg.width, dtype=cfg.dtype,
                         embedding_init=nn.initializers.normal(0.02), name="embed")
        start = None if cache is None else jnp.sum(cache.valid, axis=-1, dtype=jnp.int32)
        positions = positions_from_valid(valid, start)
        x = embed(tokens)
        if cfg.positions == "learned":
            pos_embed = nn.Embed(cfg.max_len, cfg.width, dtype=cfg.dtype,
                                 embedding_init=nn.initializers.normal(0.01), name="pos_embed")
            x = x + pos_embed(jnp.minimum(positions, cfg.max_len - 1))

        if cache is None:
            key_valid = valid
            causal = jnp.tril(jnp.ones((length, length), bool))
            mask = causal[None] & key_valid[:, None, :]
        else:
            key_valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, valid, cache.index, 1)
            query_slot = cache.index + jnp.arange(length)
            key_slot = jnp.arange(cache.valid.shape[1])
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
        x = _norm(cfg, "ln_final")(x)
        if return_hidden:
            logits = x
        elif cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                              kernel_init=nn.initializers.normal(0.02), name="head")(x)
        logits, x = logits.astype(jnp.float32), x.astype(jnp.float32)
        if also_hidden and not return_hidden:
            logits = (logits, x)
        if cache is None:
            return logits, None
        new_cache = KVCache(
            k=tuple(new_k), v=tuple(new_v), valid=key_valid, index=cache.index + length)
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
