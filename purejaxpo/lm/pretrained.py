"""Pretrained Llama-family checkpoints in the Hugging Face format, loaded into (and written back
from) purejaxpo's :class:`~purejaxpo.lm.model.Transformer`, without torch.

A checkpoint directory holds ``config.json``, the weights as ``*.safetensors`` (one file, or
shards listed by ``model.safetensors.index.json``) and usually ``tokenizer.json``. Supported:
``LlamaForCausalLM`` (grouped-query attention, RoPE with its theta and ``linear`` or ``llama3``
scaling, tied or untied embeddings) and ``Qwen2ForCausalLM`` (the same with q/k/v biases).
Anything that cannot be mapped exactly (another architecture, a head width other than
``hidden_size / num_attention_heads``, sliding-window attention, an unknown or missing tensor,
a tensor of the wrong shape) is refused with a ``ValueError`` naming it.

Layouts: a Hugging Face linear weight is ``[out, in]``; a flax ``Dense`` kernel is
``[in, out]``, so every projection is transposed on the way in and out. Names::

    model.embed_tokens.weight                    embed/embedding
    model.layers.{i}.input_layernorm.weight      block_{i}/ln_attn/scale
    model.layers.{i}.self_attn.{q,k,v}_proj.*    block_{i}/{q,k,v}/{kernel,bias}
    model.layers.{i}.self_attn.o_proj.weight     block_{i}/attn_out/kernel
    model.layers.{i}.post_attention_layernorm    block_{i}/ln_mlp/scale
    model.layers.{i}.mlp.{gate,up,down}_proj     block_{i}/{mlp_gate,mlp_in,mlp_out}/kernel
    model.norm.weight                            ln_final/scale
    lm_head.weight                               head/kernel (absent when tied)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.lm.model import TransformerConfig, init_params

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
"""The Hugging Face architectures :func:`load_pretrained` maps, by ``config.json`` name."""

_BUFFERS = ("rotary_emb.inv_freq",)  # non-parameter tensors some checkpoints carry


class Pretrained(NamedTuple):
    """A loaded checkpoint: ``params`` for :class:`~purejaxpo.lm.model.Transformer` with
    ``model``, the ``tokenizer`` (a ``tokenizers.Tokenizer``, or None without
    ``tokenizer.json``) and the checkpoint's ``config.json`` as a dict."""

    params: Any
    model: TransformerConfig
    tokenizer: Any
    hf_config: dict


def _rope(hf: dict) -> tuple[float, tuple | None]:
    """``(theta, scaling)`` from either config style (``rope_theta`` + ``rope_scaling``, or
    transformers 5's ``rope_parameters``)."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    merged = {**scaling, **params}
    kind = merged.get("rope_type", merged.get("type"))
    if kind in (None, "default"):
        return theta, None
    if kind == "linear":
        return theta, (("factor", float(merged["factor"])), ("rope_type", "linear"))
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor",
                "original_max_position_embeddings")
        return theta, tuple(sorted([(k, float(merged[k])) for k in keys]
                                   + [("rope_type", "llama3")]))
    raise ValueError(f"config.json: rope scaling type {kind!r} is not supported "
                     "(default, linear, llama3)")


def config_from_hf(hf: dict, *, max_len: int | None = None) -> TransformerConfig:
    """The :class:`TransformerConfig` of a Hugging Face ``config.json``; ``max_len`` (the KV
    cache's slots) defaults to ``max_position_embeddings``, at most 4096."""
    arch = (hf.get("architectures") or [None])[0]
    if arch not in ARCHITECTURES:
        raise ValueError(f"config.json: architecture {arch!r} is not supported; supported: "
                         f"{sorted(ARCHITECTURES)}")
    width, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != width:
        raise ValueError(f"config.json: head_dim={head_dim} x num_attention_heads={heads} != "
                         f"hidden_size={width}; only head_dim = hidden_size / heads maps")
    if hf.get("use_sliding_window"):
        raise ValueError("config.json: use_sliding_window=true is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json: hidden_act={hf['hidden_act']!r} is not supported "
                         "(silu)")
    if hf.get("mlp_bias"):
        raise ValueError("config.json: mlp_bias=true is not supported")
    theta, scaling = _rope(hf)
    qkv_bias = ARCHITECTURES[arch] == "qwen2" or bool(hf.get("attention_bias", False))
    if ARCHITECTURES[arch] == "llama" and hf.get("attention_bias"):
        raise ValueError("config.json: attention_bias=true (a bias on o_proj too) is not "
                         "supported for llama")
    return TransformerConfig(
        vocab_size=int(hf["vocab_size"]), num_layers=int(hf["num_hidden_layers"]), width=width,
        num_heads=heads, mlp_hidden=int(hf["intermediate_size"]),
        max_len=int(max_len or min(int(hf.get("max_position_embeddings", 2048)), 4096)),
        positions="rope", tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)), mlp="swiglu",
        num_kv_heads=int(hf.get("num_key_value_heads") or heads), qkv_bias=qkv_bias,
        out_bias=False, rope_theta=theta, rope_scaling=scaling)


def _names(model: TransformerConfig) -> dict[str, tuple[tuple[str, ...], bool]]:
    """``{hf tensor name: (our parameter path, transpose)}`` for ``model``."""
    out = {"model.embed_tokens.weight": (("embed", "embedding"), False),
           "model.norm.weight": (("ln_final", "scale"), False)}
    if not model.tie_embeddings:
        out["lm_head.weight"] = (("head", "kernel"), True)
    for i in range(model.num_layers):
        hf, ours = f"model.layers.{i}.", f"block_{i}"
        out[hf + "input_layernorm.weight"] = ((ours, "ln_attn", "scale"), False)
        out[hf + "post_attention_layernorm.weight"] = ((ours, "ln_mlp", "scale"), False)
        for p in "qkv":
            out[hf + f"self_attn.{p}_proj.weight"] = ((ours, p, "kernel"), True)
            if model.qkv_bias:
                out[hf + f"self_attn.{p}_proj.bias"] = ((ours, p, "bias"), False)
        out[hf + "self_attn.o_proj.weight"] = ((ours, "attn_out", "kernel"), True)
        for p, name in (("gate", "mlp_gate"), ("up", "mlp_in"), ("down", "mlp_out")):
            out[hf + f"mlp.{p}_proj.weight"] = ((ours, name, "kernel"), True)
    return out


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(f.name for f in path.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{path}: no *.safetensors file (torch .bin checkpoints are not read: "
                         "convert them with transformers' save_pretrained(safe_serialization="
                         "True))")
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        tensors.update(load_file(str(path / name)))
    return tensors


def load_tokenizer(path: str | os.PathLike):
    """The ``tokenizers.Tokenizer`` of ``path/tokenizer.json`` (None if there is none)."""
    file = Path(path) / "tokenizer.json"
    if not file.exists():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(file))


def load_pretrained(path: str | os.PathLike, *, max_len: int | None = None,
                    dtype=jnp.float32) -> Pretrained:
    """Loads a Hugging Face-format checkpoint directory (see the module docstring).

    Every tensor is mapped by name and layout and its shape checked against the parameter
    tree that ``config.json`` implies; ``ValueError`` names the first tensor that is unknown,
    missing or of the wrong shape. ``dtype`` is the parameters' (float32 by default; bf16
    checkpoints are upcast).
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise ValueError(f"{path}: no config.json (a Hugging Face checkpoint directory holds "
                         "config.json and *.safetensors)")
    hf = json.loads((path / "config.json").read_text())
    model = config_from_hf(hf, max_len=max_len)
    tensors = _read_tensors(path)
    names = _names(model)
    expected = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), model))
    params: dict = {}
    for name, value in tensors.items():
        if name.endswith(_BUFFERS):
            continue
        if name not in names:
            if name == "lm_head.weight" and model.tie_embeddings:
                continue  # some tied checkpoints also store the (equal) head
            raise ValueError(f"{path}: tensor {name!r} {tuple(value.shape)} has no place in "
                             f"a {hf['architectures'][0]} of this config")
        where, transpose = names[name]
        array = np.asarray(value, np.float32)
        if transpose:
            array = array.T
        want = expected
        for key in where:
            want = want[key]
        if tuple(array.shape) != tuple(want.shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(value.shape)}; "
                             f"{'/'.join(where)} needs {tuple(want.shape)}"
                             + (" (transposed)" if transpose else ""))
        node = params
        for key in where[:-1]:
            node = node.setdefault(key, {})
        node[where[-1]] = jnp.asarray(array, dtype)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f"{path}: tensor {missing[0]!r} is missing"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return Pretrained(params, model, load_tokenizer(path), hf)


def save_pretrained(path: str | os.PathLike, params, model: TransformerConfig, hf_config: dict,
                    *, tokenizer=None) -> None:
    """Writes ``params`` back as a Hugging Face checkpoint: ``config.json`` (``hf_config``, the
    loaded checkpoint's, with float32 weights), ``model.safetensors`` and, if given, the
    tokenizer's ``tokenizer.json``; transformers and other tools open it as the original."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (where, transpose) in _names(model).items():
        node = params
        for key in where:
            node = node[key]
        array = np.asarray(node, np.float32)
        tensors[name] = np.ascontiguousarray(array.T if transpose else array)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = dict(hf_config)
    config["dtype" if "dtype" in config else "torch_dtype"] = "float32"
    (path / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer is not None:
        tokenizer.save(str(path / "tokenizer.json"))
