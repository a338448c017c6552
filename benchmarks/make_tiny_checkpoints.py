"""Creates the tiny Hugging Face-format checkpoints that purejaxpo's pretrained-model loader is
tested on (``tests/data/hf/``), with transformers' own logits and greedy generations for fixed
prompts. Run once, in its own virtual environment (torch and transformers never enter
purejaxpo's)::

    python3 -m venv .venv-hf && .venv-hf/bin/pip install torch==2.13.0 transformers safetensors tokenizers
    .venv-hf/bin/python benchmarks/make_tiny_checkpoints.py

Writes, per architecture (``llama``: grouped-query attention, untied embeddings, RoPE theta
10000 with llama3 scaling; ``qwen2``: q/k/v biases, tied embeddings, theta 1e6; ``llama_sharded``:
the llama weights split over several safetensors files with an index), ``config.json``,
``*.safetensors``, ``tokenizer.json`` and ``reference.json``: the prompts, their token ids,
transformers' float32 logits at every position and its greedy continuation (8 tokens).

``--large DIR`` instead writes one random Llama of about 100M parameters (16 layers, width
768, grouped-query attention) with the same tokenizer to ``DIR`` (not shipped; the issue's
"larger random checkpoint" that ``lm grpo --model DIR`` is timed on, see
``benchmarks/pretrained_grpo.py``).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "hf"
PROMPTS = ["12+34=", "the cat sat on", "7*8=56", "sort: 3 1 2 ->"]
NEW_TOKENS = 8


def make_tokenizer():
    """A small byte-pair tokenizer trained on a toy corpus (about 96 tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["12+34=46", "the cat sat on the mat", "7*8=56", "sort: 3 1 2 -> 1 2 3",
              "0123456789 + - * = -> :", "a quick brown fox jumps over the lazy dog"] * 20
    trainer = trainers.BpeTrainer(vocab_size=96, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:0])
    tok.train_from_iterator(corpus, trainer)
    return tok


def make_large(out: Path) -> int:
    """A random ~100M-parameter Llama in the Hugging Face format (with the small tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = make_tokenizer()
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=768,
                         intermediate_size=2048, num_hidden_layers=16, num_attention_heads=12,
                         num_key_value_heads=4, max_position_embeddings=256, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval().float()
    model.save_pretrained(out, safe_serialization=True)
    tok.save(str(out / "tokenizer.json"))
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters in {out}")
    return 0


def main() -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if "--large" in sys.argv:
        return make_large(Path(sys.argv[sys.argv.index("--large") + 1]))
    torch.manual_seed(0)
    tok = make_tokenizer()
    vocab = tok.get_vocab_size()
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=64, initializer_range=0.1,
                  bos_token_id=1, eos_token_id=2)
    archs = {
        "llama": (LlamaForCausalLM, LlamaConfig(
            **common, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
        "qwen2": (Qwen2ForCausalLM, Qwen2Config(
            **common, num_key_value_heads=2, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=True)),
    }
    if OUT.exists():
        shutil.rmtree(OUT)
    for name, (cls, config) in archs.items():
        model = cls(config).eval().float()
        with torch.no_grad():  # norm weights and biases off their 1 / 0 init, so they count
            for p in model.parameters():
                if p.dim() == 1:
                    p.add_(0.1 * torch.randn_like(p))
        dirs = [(name, None)] + ([("llama_sharded", "40KB")] if name == "llama" else [])
        for dirname, shard in dirs:
            path = OUT / dirname
            kwargs = {"max_shard_size": shard} if shard else {}
            model.save_pretrained(path, safe_serialization=True, **kwargs)
            tok.save(str(path / "tokenizer.json"))
        refs = []
        for prompt in PROMPTS:
            ids = tok.encode(prompt).ids
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = model(x).logits[0].float().numpy()
                gen = model.generate(x, max_new_tokens=NEW_TOKENS, do_sample=False,
                                     min_new_tokens=NEW_TOKENS, eos_token_id=None,
                                     pad_token_id=0)[0, len(ids):].tolist()
            refs.append({"prompt": prompt, "ids": ids, "logits": logits.round(6).tolist(),
                         "greedy": gen})
        for dirname, _ in dirs:
            (OUT / dirname / "reference.json").write_text(json.dumps(
                {"model": name, "transformers": __import__("transformers").__version__,
                 "torch": torch.__version__, "prompts": refs}))
        size = sum(f.stat().st_size for f in (OUT / name).iterdir())
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{size / 1024:.0f} KiB in {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
