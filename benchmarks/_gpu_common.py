"""Shared helpers of the GPU benchmarks: data, FLOP accounting, timing, result files.

FLOPs per token (model FLOPs, frozen base + LoRA), with N_body the decoder's linear weights and
N_head the LM head (tied to the embedding, 49,152 x 576 for SmolLM2-135M):
* forward ``2 N``, backward through a frozen weight ``2 N`` (input gradient only) -> ``4 N``;
  LoRA weights are trained -> ``6 P_lora``.
* ``nominal`` counts the LM head at every token (what HF computes): ``4 (N_body + N_head) + 6 P_lora``.
* the packed trainer scores only answer positions, so its *executed* FLOPs are
  ``4 N_body + 6 P_lora`` per token plus ``4 N_head`` per scored token.
MFU is against 790 TFLOP/s, the bf16 matmul rate measured on these H100s (KINDS.md).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

PEAK_FLOPS = 790e12
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_records(data_dir: str | None, n_train: int = 6000) -> tuple[list[dict], list[dict]]:
    """Training and validation records: a built dataset folder (train.jsonl), else one built here
    (needs english-words), else -- e.g. on the bare GPU machine -- synthetic spelling records."""
    if data_dir and Path(data_dir, "train.jsonl").is_file():
        from spelltransfer.train.dataset import read_split

        train = read_split(data_dir, "train")
        validation = read_split(data_dir, "validation") if Path(data_dir, "validation.jsonl").is_file() else []
        return train, validation
    try:
        from spelltransfer.data import build_dataset, load_split  # needs english-words
    except ImportError:
        return synthetic_records(n_train), []
    out = Path(data_dir or "/tmp/spelltransfer-bench-data")
    build_dataset(str(out), seed=0)
    return [r.to_dict() for r in load_split(str(out), "train")], [r.to_dict() for r in load_split(str(out), "validation")]


def synthetic_records(n: int, seed: int = 0) -> list[dict]:
    """Spelling records of random lowercase words (3-12 letters): the shape of the real data."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12)))
        sep = "-" if i % 2 else " "
        out.append({"task": "spelling", "word": word, "prompt": f"Spell {word} with '{sep}' between letters.",
                    "answer": sep.join(word), "template_id": "synthetic", "split": "train"})
    return out


# SmolLM2-135M's shape (its config.json), for a random-init model when no model file is at hand.
SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                     rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                     tie_word_embeddings=True)
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)


def random_model(out_dir: str | Path, tokenizer_dir: str, tiny: bool = False) -> str:
    """An HF folder (bf16 weights, seed 0) of SmolLM2-135M's shape (``tiny``: 2 layers of 64) with
    ``tokenizer_dir``'s tokenizer; reused when already there."""
    out = Path(out_dir)
    if (out / ".complete").is_file():
        return str(out)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    shape = TINY_SHAPE if tiny else SMOLLM2_SHAPE
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / ".complete").write_text("1")
    return str(out)


def model_flops(model) -> dict:
    """Parameter counts for the FLOP formulas above."""
    import torch

    body = head = 0
    for name, module in model.named_modules():
        parts = name.split(".")
        # the base linear, also when wrapped (PEFT: q_proj.base_layer, packed: q_proj.base); not lora_A/B
        if isinstance(module, torch.nn.Linear) and any(p in TARGETS for p in parts) and not any(p.startswith("lora_") for p in parts):
            body += module.in_features * module.out_features
    head_module = model.get_output_embeddings()
    head = head_module.weight.shape[0] * head_module.weight.shape[1]
    return {"n_body": body, "n_head": head}


def lora_params(model, r: int) -> int:
    import torch

    total = 0
    for name, module in model.named_modules():
        base = getattr(module, "base", None) or getattr(module, "base_layer", None)
        layer = base if isinstance(base, torch.nn.Linear) else module
        if isinstance(layer, torch.nn.Linear) and name.split(".")[-1] in TARGETS:
            total += r * (layer.in_features + layer.out_features)
    return total


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def peak_gb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else 0.0


def reset_peak():
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def append_jsonl(path: str | Path, row: dict) -> None:
    """One result row, appended and flushed (a crash later keeps earlier rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Timer:
    def __enter__(self):
        sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync()
        self.seconds = time.perf_counter() - self.start


def sample_batch(examples: list, batch: int, rng: random.Random, length_sorted: list[int] | None = None) -> list:
    """Random examples, or (length-grouped) a random window of the examples sorted by length."""
    if length_sorted is None:
        return [examples[i] for i in rng.sample(range(len(examples)), batch)]
    start = rng.randrange(0, len(length_sorted) - batch)
    return [examples[i] for i in length_sorted[start:start + batch]]


# How each packed mode builds its PackedTrainer. "graphs" is the default path (HF decoder with
# MultiLoRALinear, CUDA graphs); "compiled" and "nocompile" use the fused decoder (fused.py) with and
# without torch.compile (compiled: faster, but its CUDA gradients are wrong -- docs/performance.md s.6).
PACKED_MODES = {
    "graphs": {"cuda_graphs": True, "fused": False},
    "compiled": {"cuda_graphs": True, "fused": True, "compile": True},
    "nocompile": {"cuda_graphs": True, "fused": True, "compile": False},
    "eager": {"cuda_graphs": False, "fused": True},
    "eager-unfused": {"cuda_graphs": False, "fused": False},
    "padded": {"cuda_graphs": False, "layout": "padded", "fused": False},
    "loop": {"cuda_graphs": False, "kernel": "loop", "fused": False},
}
