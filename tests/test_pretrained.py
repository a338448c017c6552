"""Loading Hugging Face-format Llama and Qwen2 checkpoints without torch: logits and greedy
generations against transformers' (saved by benchmarks/make_tiny_checkpoints.py in
tests/data/hf), sharded checkpoints, a save -> load round trip, and refusals that name the
tensor or setting."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.lm.model import Transformer, TransformerConfig
from purejaxpo.lm.pretrained import config_from_hf, load_pretrained, save_pretrained
from purejaxpo.lm.sampling import generate

DATA = Path(__file__).parent / "data" / "hf"
NAMES = ["llama", "qwen2", "llama_sharded"]


def _reference(name):
    return json.loads((DATA / name / "reference.json").read_text())["prompts"]


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_transformers(name):
    pre = load_pretrained(DATA / name)
    forward = jax.jit(lambda p, ids: Transformer(pre.model).apply(
        {"params": p}, ids, jnp.ones_like(ids, bool))[0])
    for ref in _reference(name):
        assert pre.tokenizer.encode(ref["prompt"]).ids == ref["ids"]  # tokenizer.json too
        logits = forward(pre.params, jnp.asarray([ref["ids"]]))[0]
        np.testing.assert_allclose(logits, np.asarray(ref["logits"]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_greedy_generation_matches_transformers_token_for_token(name):
    pre = load_pretrained(DATA / name)
    for ref in _reference(name)[:2]:  # each prompt length compiles the decoder once
        ids = jnp.asarray([ref["ids"]])
        out = generate(jax.random.PRNGKey(0), pre.params, pre.model, ids,
                       jnp.ones_like(ids, bool), max_new_tokens=len(ref["greedy"]),
                       eos_id=-1, pad_id=0, greedy=True)
        assert np.asarray(out.tokens[0]).tolist() == ref["greedy"], ref["prompt"]
        assert pre.tokenizer.decode(ref["ids"] + ref["greedy"])  # decodes to a string


def test_config_mapping():
    llama = load_pretrained(DATA / "llama").model
    assert (llama.num_kv_heads, llama.num_heads, llama.tie_embeddings) == (2, 4, False)
    assert llama.norm == "rmsnorm" and llama.mlp == "swiglu" and not llama.qkv_bias
    assert dict(llama.rope_scaling)["rope_type"] == "llama3"
    qwen = load_pretrained(DATA / "qwen2").model
    assert qwen.qkv_bias and qwen.tie_embeddings and qwen.rope_theta == 1e6
    # The config survives its own JSON round trip (policy folders store it).
    assert TransformerConfig.from_dict(json.loads(json.dumps(llama.to_dict()))) == llama


def test_save_then_load_round_trip(tmp_path):
    pre = load_pretrained(DATA / "qwen2")
    moved = jax.tree_util.tree_map(lambda x: x + 0.01, pre.params)
    save_pretrained(tmp_path / "out", moved, pre.model, pre.hf_config, tokenizer=pre.tokenizer)
    again = load_pretrained(tmp_path / "out")
    assert again.model == pre.model
    for a, b in zip(jax.tree_util.tree_leaves(again.params), jax.tree_util.tree_leaves(moved)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert again.tokenizer.encode("12+34=").ids == pre.tokenizer.encode("12+34=").ids


def _copy(tmp_path, name="llama"):
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    return dst


def test_refusals_name_the_tensor_or_setting(tmp_path):
    from safetensors.numpy import load_file, save_file

    path = _copy(tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    bad = dict(tensors)
    bad["model.layers.0.mlp.up_proj.weight"] = bad["model.layers.0.mlp.up_proj.weight"][:-1]
    save_file(bad, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"'model.layers.0.mlp.up_proj.weight' has shape"):
        load_pretrained(path)
    bad = dict(tensors)
    del bad["model.norm.weight"]
    save_file(bad, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"'model.norm.weight' is missing"):
        load_pretrained(path)
    bad = dict(tensors, **{"model.layers.0.extra.weight": np.zeros(3, np.float32)})
    save_file(bad, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"'model.layers.0.extra.weight' \(3,\) has no place"):
        load_pretrained(path)
    hf = json.loads((DATA / "llama" / "config.json").read_text())
    for change, message in [({"architectures": ["GPT2LMHeadModel"]}, "GPT2LMHeadModel"),
                            ({"head_dim": 32}, "head_dim=32"),
                            ({"use_sliding_window": True}, "use_sliding_window"),
                            ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0}},
                             "'yarn' is not supported")]:
        with pytest.raises(ValueError, match=message):
            config_from_hf({**hf, **change})
    with pytest.raises(ValueError, match="no config.json"):
        load_pretrained(tmp_path)


def test_bfloat16_compute_keeps_float32_master_weights():
    import dataclasses

    from purejaxpo.lm.model import init_params

    pre = load_pretrained(DATA / "llama")
    bf16 = dataclasses.replace(pre.model, compute_dtype="bfloat16")
    ref = _reference("llama")[1]
    ids = jnp.asarray([ref["ids"]])
    logits = jax.jit(lambda p: Transformer(bf16).apply(
        {"params": p}, ids, jnp.ones_like(ids, bool))[0])(pre.params)[0]
    want = np.asarray(ref["logits"])
    assert logits.dtype == jnp.float32
    assert np.max(np.abs(np.asarray(logits) - want)) < 0.05 * np.max(np.abs(want)) + 0.05
    assert np.mean(np.argmax(logits, -1) == np.argmax(want, -1)) >= 0.75
    # Fresh parameters stay float32 (the master weights); the KV cache is bf16.
    params = init_params(jax.random.PRNGKey(0), bf16)
    assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
    out = generate(jax.random.PRNGKey(0), pre.params, bf16, ids, jnp.ones_like(ids, bool),
                   max_new_tokens=4, eos_id=-1, pad_id=0, greedy=True)
    assert out.tokens.shape == (1, 4)
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        dataclasses.replace(pre.model, compute_dtype="float16")


def test_lm_generate_command_batches_left_padded_prompts(tmp_path, capsys):
    from purejaxpo import cli

    refs = _reference("llama")[:2]  # prompts of different lengths: one is left-padded
    path = tmp_path / "gen.json"
    argv = ["lm", "generate", "--model", str(DATA / "llama"), "--greedy", "--max-new-tokens",
            str(len(refs[0]["greedy"])), "--json", str(path)]
    for ref in refs:
        argv += ["--prompt", ref["prompt"]]
    assert cli.main(argv) == 0
    results = json.loads(path.read_text())["results"]
    assert [r["tokens"] for r in results] == [ref["greedy"] for ref in refs]
    assert f"{refs[0]['prompt']!r} -> " in capsys.readouterr().out
    assert cli.main(["lm", "generate", "--model", str(DATA / "llama"), "--prompt", "1",
                     "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens=0 is invalid" in capsys.readouterr().err
    assert cli.main(["lm", "generate", "--model", str(tmp_path), "--prompt", "1"]) == 2
    assert "no config.json" in capsys.readouterr().err
