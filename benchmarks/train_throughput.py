"""Training throughput on the GPU, side by side: HF+PEFT, Unsloth and packed multi-trial LoRA.

Run on the GPU machine (see docs/performance.md for the exact command there):

    python benchmarks/train_throughput.py --data DIR --out results/benchmarks

Each backend runs in its own subprocess (Unsloth must be imported before transformers, and a
backend's memory must not count against the next); each prints one JSON row per configuration
to ``OUT/train_throughput.jsonl``. The parent then writes ``train_throughput.csv`` and
``train_throughput.json`` and prints a table with the ratio of each row to ``hf`` at the same
per-trial batch size.

Real model (smollm2-135m), LoRA r=16 alpha=32 on all linear layers, spelling examples from the
dataset, bf16. Backends:
* ``hf``: ``spelltransfer.train.backends.hf`` + the trainer's own step (TRL padding collator,
  bf16 autocast, loss on answers, clip 1.0, AdamW), random batches; ``hf-grouped``: the same
  with length-grouped batches (no padding compute).
* ``unsloth``: ``spelltransfer.train.backends.unsloth`` (FastLanguageModel, gradient
  checkpointing off), same step.
* ``packed``: ``spelltransfer.train.packed.PackedTrainer`` with K trials (K x batch examples
  per step; tokens/s is the aggregate of all K trials), variable-length packing, grouped GEMMs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gpu_common as common  # noqa: E402


def _hf_like(args, backend: str) -> None:
    if backend == "unsloth":
        import unsloth  # noqa: F401  (first: patches transformers/peft)
    import random

    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from spelltransfer.models import PromptFormat
    from spelltransfer.train.backends import get_backend
    from spelltransfer.train.dataset import tokenize_example
    from spelltransfer.train.model_config import LoraSettings, ModelConfig

    train, _ = common.load_records(args.data)
    cfg = ModelConfig(name=args.model, max_seq_length=128, gradient_checkpointing=False,
                      lora=LoraSettings(r=args.r, alpha=2 * args.r))
    started = time.perf_counter()
    loaded = get_backend(backend).load(cfg, seed=0)
    load_s = time.perf_counter() - started
    model, tokenizer = loaded.model, loaded.tokenizer
    fmt = PromptFormat.from_tokenizer(tokenizer)
    examples = [tokenize_example(r, tokenizer, fmt, 128) for r in train[:4000]]
    by_length = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    flops = common.model_flops(model)
    p_lora = sum(p.numel() for p in params)
    model.train()

    def step(batch_examples):
        batch = collator([{"input_ids": e.input_ids, "labels": e.labels} for e in batch_examples])
        batch = {k: v.to(loaded.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(loaded.device.split(":")[0], dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(batch["attention_mask"].sum()), int(batch["attention_mask"].numel())

    variants = [(backend, None)] + ([(f"{backend}-grouped", by_length)] if args.length_grouped else [])
    for name, order in variants:
        for batch_size in args.batch_sizes:
            rng = random.Random(batch_size)
            row = {"backend": name, "trials": 1, "batch": batch_size, "device": common.device_name(), "load_s": round(load_s, 1)}
            try:
                common.reset_peak()
                warm = args.warmup + (4 if backend == "unsloth" and batch_size == args.batch_sizes[0] else 0)
                for _ in range(warm):
                    step(common.sample_batch(examples, batch_size, rng, order))
                tokens = padded = 0
                with common.Timer() as timer:
                    for _ in range(args.steps):
                        t, p = step(common.sample_batch(examples, batch_size, rng, order))
                        tokens += t
                        padded += p
                seconds = timer.seconds
                tok_s = tokens / seconds
                nominal = 4 * (flops["n_body"] + flops["n_head"]) + 6 * p_lora
                row.update(step_s=seconds / args.steps, tokens_per_s=tok_s, padded_fraction=1 - tokens / padded,
                           mfu_nominal=tok_s * nominal / common.PEAK_FLOPS,
                           mfu_executed=(padded / seconds) * nominal / common.PEAK_FLOPS, peak_gb=common.peak_gb())
            except torch.OutOfMemoryError as error:
                row["error"] = f"OOM: {str(error)[:120]}"
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
            except Exception as error:  # one failing size must not lose the rest
                row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            print(json.dumps(row), flush=True)
            common.append_jsonl(args.rows, row)


def _packed(args) -> None:
    import torch

    from spelltransfer.models import load_model, load_tokenizer, resolve_model_path
    from spelltransfer.train.packed import PackedTrainer, TrialSpec, sample_seed_grid

    train, _ = common.load_records(args.data)
    tokenizer = load_tokenizer(args.model)
    path = resolve_model_path(args.model)
    from spelltransfer.train.packed.trainer import prepare_examples

    prepared = prepare_examples(train[:4000], tokenizer)
    configs = []
    for spec in args.packed_configs.split(","):
        spec, _, chunk = spec.partition("@")
        spec, _, mode = spec.partition(":")
        k, b = spec.split("x")
        configs.append({"trials": int(k), "batch": b if b == "grid" else int(b), "mode": mode or "graphs",
                        "chunk_tokens": int(chunk or args.chunk_tokens)})
    check = _graph_check(args, train, tokenizer, path, prepared) if args.graph_check else None
    if check is not None:
        print(json.dumps({"graph_check": check}), flush=True)
        common.append_jsonl(args.rows, {"backend": "graph-check", "batch": "-", **check})
    for cfg in configs:
        mode = cfg["mode"]
        row = {"backend": "packed" if mode == "graphs" else f"packed-{mode}", "device": common.device_name(), **cfg}
        trainer = model = None
        try:
            common.reset_peak()
            model = load_model(args.model, dtype="auto", device=args.device)
            if cfg["batch"] == "grid":
                trials = sample_seed_grid(cfg["trials"], seed=0)
            else:
                trials = [TrialSpec(trial_id=f"t{i}", seed=i + 1, r=args.r, alpha=2 * args.r, lr=2e-4,
                                    batch_size=cfg["batch"], max_steps=10**6) for i in range(cfg["trials"])]
            trainer = PackedTrainer(model, tokenizer, train[:4000], trials, max_chunk_tokens=cfg["chunk_tokens"],
                                    base_model_path=path, prepared=prepared, **common.PACKED_MODES[mode])
            row.update(layout_used=trainer.layout, kernel_used=trainer.kernel, r_max=trainer.weights.r_max,
                       cuda_graphs=trainer.cuda_graphs, fused=trainer.fused is not None,
                       compiled=bool(trainer.fused and trainer.fused.compiled))
            steps = args.steps if cfg["batch"] != "grid" else max(3, args.steps // 2)
            with common.Timer() as warm:
                for _ in range(args.warmup):
                    trainer.step()
            row["warmup_s"] = warm.seconds
            start_index = len(trainer.history.steps)
            with common.Timer() as timer:
                for _ in range(steps):
                    trainer.step()
            stats = trainer.history.steps[start_index:]
            tokens = sum(s.tokens for s in stats)
            padded = sum(s.padded_tokens for s in stats)
            scored = sum(s.scored_tokens for s in stats)
            flops = common.model_flops(model)
            p_lora = sum(common.lora_params(model, t.r) for t in trials) / len(trials)
            p_lora_padded = common.lora_params(model, trainer.weights.r_max)
            seconds = timer.seconds
            nominal = (4 * (flops["n_body"] + flops["n_head"]) + 6 * p_lora) * tokens
            executed = (4 * flops["n_body"] + 6 * p_lora_padded) * padded + 4 * flops["n_head"] * scored
            row.update(step_s=seconds / steps, tokens_per_s=tokens / seconds, padded_fraction=1 - tokens / padded,
                       scored_fraction=scored / tokens, examples_per_step=sum(t.batch_size for t in trials),
                       mfu_nominal=nominal / seconds / common.PEAK_FLOPS, mfu_executed=executed / seconds / common.PEAK_FLOPS,
                       peak_gb=common.peak_gb())
        except torch.OutOfMemoryError as error:
            row["error"] = f"OOM: {str(error)[:120]}"
        except Exception as error:
            import traceback

            traceback.print_exc()
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        del trainer, model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        common.append_jsonl(args.rows, row)


def _graph_check(args, train, tokenizer, path, prepared) -> dict:
    """The same 8 trials for 4 steps in every mode of CHECK_MODES: per-trial losses against the
    eager HF-decoder path (the one the CPU tests tie to PEFT) must agree to bf16 noise."""
    import torch

    from spelltransfer.models import load_model
    from spelltransfer.train.packed import PackedTrainer, sample_seed_grid

    trials = sample_seed_grid(8, seed=1)
    losses, out = {}, {}
    for mode in ("eager-unfused",) + CHECK_MODES:
        try:
            model = load_model(args.model, dtype="auto", device=args.device)
            trainer = PackedTrainer(model, tokenizer, train[:4000], trials, max_chunk_tokens=8192, base_model_path=path,
                                    prepared=prepared, **common.PACKED_MODES[mode])
            with common.Timer() as timer:
                trainer.train(max_packed_steps=4)
            losses[mode] = trainer.history.losses
            out[f"seconds_{mode}"] = round(timer.seconds, 1)
            out[f"compiled_{mode}"] = bool(trainer.fused and trainer.fused.compiled)
        except Exception as error:
            import traceback

            traceback.print_exc()
            out[f"error_{mode}"] = f"{type(error).__name__}: {str(error)[:300]}"
        finally:
            torch.cuda.empty_cache()
    ref = losses.get("eager-unfused")
    for mode in CHECK_MODES:
        if ref is not None and mode in losses:
            out[f"max_rel_loss_diff_{mode}"] = max(abs(a - b) / max(abs(b), 1e-6)
                                                   for la, lb in zip(losses[mode], ref) for a, b in zip(la, lb))
    out["loss_step4"] = {mode: [round(h[-1], 4) for h in value] for mode, value in losses.items()}
    return out


CHECK_MODES = ("graphs", "eager", "nocompile", "compiled")


def _summarise(rows_path: Path, out_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    hf = {r["batch"]: r["tokens_per_s"] for r in rows if r.get("backend") == "hf" and "tokens_per_s" in r}
    for r in rows:
        if "tokens_per_s" in r and r.get("batch") in hf:
            r["ratio_to_hf"] = r["tokens_per_s"] / hf[r["batch"]]
    fields = ["backend", "trials", "batch", "chunk_tokens", "cuda_graphs", "fused", "compiled", "layout_used", "kernel_used", "warmup_s", "step_s", "tokens_per_s", "ratio_to_hf",
              "mfu_nominal", "mfu_executed", "padded_fraction", "peak_gb", "device", "error"]
    with open(out_dir / ".train_throughput.csv.tmp", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(out_dir / ".train_throughput.csv.tmp", out_dir / "train_throughput.csv")
    common.write_atomic(out_dir / "train_throughput.json", json.dumps(rows, indent=1))
    return rows


def _print_table(rows: list[dict]) -> None:
    print(f"{'backend':16} {'K':>3} {'batch':>5} {'step s':>8} {'tok/s':>10} {'x hf':>6} {'MFU nom':>7} {'MFU exe':>7} {'pad':>5} {'GB':>6}")
    for r in rows:
        if "step_s" not in r:
            print(f"{r['backend']:16} {json.dumps({k: v for k, v in r.items() if k != 'backend'})[:110]}")
            continue
        if "error" in r:
            print(f"{r['backend']:16} {r.get('trials', 1):>3} {str(r['batch']):>5}  ERROR {r['error'][:80]}")
            continue
        print(f"{r['backend']:16} {r.get('trials', 1):>3} {str(r['batch']):>5} {r['step_s']:8.3f} {r['tokens_per_s']:10.0f} "
              f"{r.get('ratio_to_hf', float('nan')):6.2f} {r['mfu_nominal']:7.1%} {r['mfu_executed']:7.1%} "
              f"{r['padded_fraction']:5.1%} {r['peak_gb']:6.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default=None, help="dataset folder (train.jsonl); default: build one")
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--backends", default="hf,unsloth,packed")
    parser.add_argument("--batch-sizes", default="4,8,16,32,64,128,256")
    parser.add_argument("--packed-configs", default="1x32,8x32,64x4,64x16,64x32,64xgrid,64xgrid@65536,64xgrid:eager",
                        help="packed runs as TRIALSxBATCH[:MODE][@CHUNK_TOKENS], comma-separated; MODE one of "
                             + ", ".join(common.PACKED_MODES) + " (default graphs)")
    parser.add_argument("--graph-check", action="store_true", help="first compare graphed and eager losses")
    parser.add_argument("--chunk-tokens", type=int, default=32768)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-extra", action="store_true", help="skip the layout/kernel/seed-grid packed variants")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--length-grouped", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per backend subprocess")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.worker:
        (_packed if args.worker == "packed" else lambda a: _hf_like(a, args.worker))(args)
        return 0
    rows_path = out_dir / "train_throughput.jsonl"
    rows_path.unlink(missing_ok=True)
    for backend in args.backends.split(","):
        command = [sys.executable, __file__, "--worker", backend, "--rows", str(rows_path)] + (argv if argv is not None else sys.argv[1:])
        started = time.perf_counter()
        try:
            code = subprocess.run(command, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        print(f"== {backend}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
        if code != 0:
            common.append_jsonl(rows_path, {"backend": backend, "batch": "-", "error": f"worker exit {code}"})
    _print_table(_summarise(rows_path, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
