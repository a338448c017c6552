"""Shared pieces of the TRL runners (``_trl_grpo_runner.py``, ``_trl_dpo_runner.py``).

Runs only inside TRL's own virtual environment (NOT purejaxpo's)::

    python3 -m venv .venv-trl
    .venv-trl/bin/pip install -r benchmarks/requirements-trl.txt

Nothing here touches the network: ``HF_HUB_OFFLINE=1`` is set before transformers is imported, the
tokenizer is built in memory with the ``tokenizers`` library and the model is a randomly initialised
GPT-2, both saved to a temporary folder from which the trainers load the policy (and the reference).

The task is 3-digit addition. A prompt is ``a`` (3 digits, zero-padded), ``+``, ``b`` (3 digits),
``=`` as space-separated words, e.g. ``"1 2 3 + 4 5 6 ="`` (8 tokens, no BOS). The answer is the 4
digits of ``a + b`` zero-padded and REVERSED (least significant first), then EOS:
123 + 456 = 579 -> ``"0579"`` -> ``"9 7 5 0"`` + ``<eos>`` (5 tokens).

Vocabulary (15 word-level tokens, in this id order): ``<pad>``=0, ``<bos>``=1, ``<eos>``=2,
``0``..``9`` = 3..12, ``+``=13, ``=``=14.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# No accelerator is used even where one exists: the benchmark is CPU against CPU.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _bench_common import machine_busy_s  # noqa: E402  (next to this file; the runners put it on sys.path)

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
VOCAB = [PAD, BOS, EOS, *[str(d) for d in range(10)], "+", "="]
TOKEN_IDS = {tok: i for i, tok in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID = TOKEN_IDS[PAD], TOKEN_IDS[BOS], TOKEN_IDS[EOS]
PROMPT_TOKENS = 8  # a0 a1 a2 + b0 b1 b2 =
ANSWER_TOKENS = 5  # 4 reversed digits + <eos>


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by both runners: model shape, timing, output."""
    parser.add_argument("--layers", type=int, default=4, help="GPT-2 n_layer (default 4)")
    parser.add_argument("--width", type=int, default=128, help="GPT-2 n_embd (default 128)")
    parser.add_argument("--heads", type=int, default=4, help="GPT-2 n_head (default 4)")
    parser.add_argument("--positions", type=int, default=32, help="GPT-2 n_positions (default 32)")
    parser.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="GPT-2 resid/embd/attn dropout (default 0.0: no dropout, as a plain JAX transformer; "
        "GPT-2's own default is 0.1)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, model init and TRL (default 0)")
    parser.add_argument("--lr", type=float, default=1e-6, help="AdamW learning rate (default: TRL's 1e-6)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads (default 0: leave torch's default)"
    )
    parser.add_argument("--json", default=None, help="also write the JSON result to this path")


def build_tokenizer():
    """The 15-token word-level tokenizer, as a transformers ``PreTrainedTokenizerFast``.

    The special tokens are registered as added tokens, so ``"... 0<eos>"`` (how TRL's DPO appends
    EOS to a completion) still splits ``<eos>`` off as one token. No post-processor: encoding never
    adds BOS/EOS by itself. Padding side is left, as TRL expects for prompts.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=dict(TOKEN_IDS), unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([PAD, BOS, EOS])
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        truncation_side="left",
        model_max_length=64,
    )
    return hf_tok


def build_model_dir(args, tmpdir: str) -> tuple[str, int]:
    """Saves a random-init fp32 GPT-2 and the tokenizer to ``tmpdir``; returns (path, n_params)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    config = GPT2Config(
        vocab_size=len(VOCAB),
        n_positions=args.positions,
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    model = GPT2LMHeadModel(config).to(torch.float32)
    model.generation_config.bos_token_id = BOS_ID
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = PAD_ID
    n_params = sum(p.numel() for p in model.parameters())
    path = os.path.join(tmpdir, "tiny-gpt2-add3")
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path, n_params


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, padding_side="left", truncation_side="left")
    assert tok.pad_token_id == PAD_ID and tok.bos_token_id == BOS_ID and tok.eos_token_id == EOS_ID
    return tok


def make_problems(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1000, size=n)
    b = rng.integers(0, 1000, size=n)
    return a, b


def prompt_text(a: int, b: int) -> str:
    return " ".join([*f"{a:03d}", "+", *f"{b:03d}", "="])


def answer_text(a: int, b: int) -> str:
    """The reversed 4-digit sum without EOS, e.g. 123+456 -> ``"9 7 5 0"``."""
    return " ".join(f"{a + b:04d}"[::-1])


def check_tokenizer(tok) -> None:
    """Fails loudly if the saved/reloaded tokenizer does not encode the task as intended."""
    ids = tok(prompt_text(123, 456))["input_ids"]
    assert ids == [4, 5, 6, 13, 7, 8, 9, 14], ids
    ids = tok(prompt_text(123, 456) + " " + answer_text(123, 456) + EOS)["input_ids"]
    assert ids == [4, 5, 6, 13, 7, 8, 9, 14, 12, 10, 8, 3, EOS_ID], ids
    assert tok.decode([12, 10, 8, 3, EOS_ID], skip_special_tokens=True) == "9 7 5 0"


class StepTimer:
    """A ``TrainerCallback`` factory: wall time of every optimiser step (perf_counter).

    on_step_begin fires after the batch is fetched from the dataloader and before
    ``training_step`` (for GRPO: generation, rewards, reference log-probs, loss, backward);
    on_step_end fires after the optimiser and scheduler step.

    Also per step: this process's CPU time (``time.process_time``) and the CPU time the rest of
    the machine used meanwhile (``/proc/stat`` busy time minus ours, 10 ms resolution). torch's
    intra-op thread pool (2 threads here) is very sensitive to another busy process: with one core
    taken by someone else a GRPO step was measured ~40x slower (5 s instead of 0.13 s). The
    ``others_busy_cores`` figure in the JSON lets a driver reject such runs.
    """

    def __new__(cls):
        from transformers import TrainerCallback

        class _StepTimer(TrainerCallback):
            def __init__(self):
                self.durations: list[float] = []
                self.cpu: list[float] = []
                self.others: list[float | None] = []
                self._t0 = self._c0 = self._m0 = None
                self.on_end_hooks = []

            def on_step_begin(self, args, state, control, **kwargs):
                self._m0 = machine_busy_s()
                self._c0 = time.process_time()
                self._t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                t1 = time.perf_counter()
                c1 = time.process_time()
                m1 = machine_busy_s()
                self.durations.append(t1 - self._t0)
                self.cpu.append(c1 - self._c0)
                others = None if m1 is None or self._m0 is None else max(0.0, (m1 - self._m0) - (c1 - self._c0))
                self.others.append(others)
                for hook in self.on_end_hooks:
                    hook()

        return _StepTimer()


def timing_summary(timer, warmup: int) -> dict:
    """Contention figures over the timed steps (see ``StepTimer``)."""
    wall = sum(timer.durations[warmup:])
    cpu = sum(timer.cpu[warmup:])
    others = timer.others[warmup:]
    out = {"cpu_s_per_wall_s": cpu / wall if wall else float("nan")}
    out["others_busy_cores"] = None if any(o is None for o in others) else sum(others) / wall
    out["step_cpu_s"] = timer.cpu[warmup:]
    out["step_others_cpu_s"] = others
    return out


def check_config(config) -> None:
    """Fails loudly unless the trainer config really is CPU, fp32, no checkpointing, no vLLM."""
    assert config.use_cpu and config.device.type == "cpu", config.device
    assert not config.bf16 and not config.fp16
    assert not config.activation_checkpointing and not config.gradient_checkpointing
    assert not getattr(config, "use_vllm", False)
    assert config.gradient_accumulation_steps == 1


def quiet_libraries() -> None:
    """No progress bars or info logs on the console (stdout stays for the one JSON line)."""
    import warnings

    import datasets
    import transformers

    # transformers 5.24 warns (FutureWarning) about its own internal use of the old checkpointing names.
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


def common_result(args, n_params: int) -> dict:
    import torch
    import transformers
    import trl

    return {
        "trl_version": trl.__version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "params": n_params,
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "dtype": "float32",
        "n_layer": args.layers,
        "n_embd": args.width,
        "n_head": args.heads,
        "n_positions": args.positions,
        "vocab_size": len(VOCAB),
        "dropout": args.dropout,
        "steps": args.steps,
        "warmup": args.warmup,
        "seed": args.seed,
        "learning_rate": args.lr,
        "load_avg_1m_at_start": os.getloadavg()[0],
    }


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def emit(result: dict, json_path: str | None) -> None:
    import json
    import sys

    result["load_avg_1m_at_end"] = os.getloadavg()[0]
    line = json.dumps(result)
    if json_path:
        with open(json_path, "w") as f:
            f.write(line + "\n")
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def base_training_kwargs(args, output_dir: str, batch_size: int) -> dict:
    """TrainingArguments common to both trainers: CPU fp32, no logging/saving/eval/checkpointing."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        use_cpu=True,
        bf16=False,
        fp16=False,
        # transformers 5.24 renamed gradient_checkpointing -> activation_checkpointing; TRL 1.16's config still
        # defaults the old name to True, which is used only while the new one is unset. Set both to False.
        activation_checkpointing=False,
        gradient_checkpointing=False,
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
        data_seed=args.seed,
        push_to_hub=False,
    )
