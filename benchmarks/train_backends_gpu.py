"""Both training backends on the same config, on CUDA: does each train, resume and save an adapter,
and how many tokens/s does it reach?

    python benchmarks/train_backends_gpu.py --tokenizer DIR [--model DIR] [--steps 40] [--batch 32]

Without ``--model`` it builds a random-weight Llama of SmolLM2-135M's exact shape (the timing
does not depend on the weights) around the given tokenizer folder. Unsloth runs first in a
fresh process (it must be imported before transformers), HF+PEFT in another; each prints
tokens/s over the steps after the first 5 (Unsloth compiles on its first steps).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

WORDS = ["garden", "apple", "river", "stone", "planet", "window", "candle", "forest", "butter", "yellow",
         "dragon", "silver", "orange", "pencil", "rocket", "guitar", "jacket", "winter", "summer", "castle"]


def build_model(tokenizer_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_data(out: Path) -> Path:
    from spelltransfer.data import make_examples, write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", make_examples("spelling", WORDS[:16], 2000, seed=0, split="train"))
    validation = [e for task in ("spelling", "position", "count") for e in make_examples(task, WORDS[16:], 16, 1, "validation")]
    write_jsonl(out / "validation.jsonl", validation)
    write_jsonl(out / "test.jsonl", validation)
    return out


def train_one(backend: str, model: str, data: str, out: str, steps: int, batch: int) -> None:
    """Runs in its own process: train ``steps`` (killed halfway and resumed), report tokens/s."""
    if backend == "unsloth":
        import unsloth  # noqa: F401  (first, on purpose)
    import time

    from spelltransfer.train import load_training_config, run_training

    overrides = [f"training.backend={backend}", f"model.name={model}", f"training.data_dir={data}",
                 f"training.max_steps={steps}", f"training.batch_size={batch}", "training.eval_steps=1000000",
                 f"training.save_steps={steps // 2}", "training.eval_samples=32", "training.early_stopping.metric=accuracy",
                 "training.tracking.mlflow.enabled=false", "training.tracking.wandb.enabled=false",
                 f"training.plot_dir={out}/plots"]
    config = load_training_config("configs/training/config.yaml", overrides)
    stamps = {}

    class Stop(Exception):
        pass

    def on_event(event):
        if event["event"] == "step":
            stamps[event["step"]] = (time.perf_counter(), event["tokens"])
            if event["step"] == steps // 2 + 1 and "killed" not in stamps:
                stamps["killed"] = True
                raise Stop()

    try:
        run_training(config, f"{out}/{backend}", on_event=on_event)
    except Stop:
        pass
    first = dict(stamps)
    result = run_training(config, f"{out}/{backend}", resume=True, on_event=on_event)
    (t0, k0), (t1, k1) = first[5], first[steps // 2]
    print(json.dumps({"backend": result.backend, "tokens_per_s": round((k1 - k0) / (t1 - t0)),
                      "s_per_step": round((t1 - t0) / (steps // 2 - 5), 4), "resumed_from": result.resumed_from,
                      "stop_step": result.stop_step, "last_loss": result.last_loss, "final": result.final_metrics,
                      "adapter_files": sorted(p.name for p in Path(result.adapter_dir).iterdir())}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path, default=Path("/tmp/backends"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backends", default="unsloth,hf")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        train_one(args.one, str(args.model), str(args.out / "data"), str(args.out), args.steps, args.batch)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model or build_model(args.tokenizer, args.out / "model")
    build_data(args.out / "data")
    for backend in args.backends.split(","):
        subprocess.run([sys.executable, __file__, "--one", backend, "--model", str(model),
                        "--out", str(args.out), "--steps", str(args.steps), "--batch", str(args.batch)], check=False)


if __name__ == "__main__":
    main()
