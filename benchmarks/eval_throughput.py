"""Evaluation throughput: items/s of greedy generation against batch size, with ratios to a baseline.

Goal (issue 2): 900 test items (300 per task) in <= 3 min on the 2-core CPU machine, i.e. >= 5
items/s. Each row times ``HFGenerationEngine.generate`` over the same items with the evaluator's
own token budgets, so the figures are what ``spelltransfer eval`` spends generating.

    python benchmarks/eval_throughput.py --data data/spelling --per-task 20 --batch-sizes 1,8,16,32
    python benchmarks/eval_throughput.py --data D --device cuda --per-task 300 --batch-sizes 8,32,128,300
    python benchmarks/eval_throughput.py --data D --modes fp32,fp32-noprefix,bf16-autocast --threads 1

Modes: ``fp32`` (the evaluator's default on CPU), ``fp32-noprefix`` (no shared system-prompt KV
cache), ``bf16-autocast`` (torch.autocast bf16 around generation), ``bf16`` (bf16 weights; the
default on CUDA). ``same`` counts outputs identical to the baseline row's, so a faster mode that
changes answers is visible. The load average is printed because the CPU machine is shared:
rows measured under different load are not comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", required=True, help="dataset folder from `spelltransfer data build`")
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-task", type=int, default=20, help="items per task (first N, as --limit)")
    parser.add_argument("--batch-sizes", default="1,8,16,32,64")
    parser.add_argument("--baseline-batch", type=int, default=None, help="batch size of the baseline row (default: first)")
    parser.add_argument("--modes", default="fp32", help="comma-separated: fp32, fp32-noprefix, bf16-autocast, bf16")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--target-items", type=int, default=900, help="project the time for this many items")
    args = parser.parse_args(argv)

    import torch

    from spelltransfer.data import load_split
    from spelltransfer.evaluate import HFGenerationEngine
    from spelltransfer.evaluate.evaluator import as_items, select_items, token_budget

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    items = select_items(as_items(load_split(args.data, args.split)), limit=args.per_task)
    questions = [item["prompt"] for item in items]
    budgets = [token_budget(item) for item in items]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    baseline_batch = args.baseline_batch or batch_sizes[0]
    if baseline_batch not in batch_sizes:
        parser.error("--baseline-batch must be one of --batch-sizes")

    print(f"device={device} threads={torch.get_num_threads()} cpus={os.cpu_count()} items={len(items)} "
          f"(per task {args.per_task}) budget tokens={sum(budgets)} torch={torch.__version__}")
    if device == "cuda":
        print(f"gpu={torch.cuda.get_device_name()}")
    engines: dict[str, HFGenerationEngine] = {}
    rows = []
    for mode in modes:
        dtype = "bfloat16" if mode == "bf16" else "float32"
        key = dtype
        if key not in engines:
            engines[key] = HFGenerationEngine(args.model, batch_size=1, dtype=dtype, device=device)
        engine = engines[key]
        engine.share_prefix = mode != "fp32-noprefix"
        autocast = (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
                    if mode == "bf16-autocast" else contextlib.nullcontext())
        with autocast:
            engine.batch_size = min(batch_sizes)
            engine.generate(questions[:2], budgets[:2])  # warm-up: allocator, kernels, caches
            for batch_size in batch_sizes:
                engine.batch_size = batch_size
                load = os.getloadavg()[0]
                started = time.perf_counter()
                outputs = engine.generate(questions, budgets)
                seconds = time.perf_counter() - started
                rows.append({"mode": mode, "batch": batch_size, "seconds": seconds, "items_s": len(items) / seconds,
                             "load": load, "outputs": outputs})
                print(f"  {mode:14s} batch {batch_size:4d}: {len(items) / seconds:7.2f} items/s ({seconds:.1f} s, load {load:.1f})",
                      flush=True)

    base = next(r for r in rows if r["mode"] == modes[0] and r["batch"] == baseline_batch)
    print()
    print(f"{'mode':14s} {'batch':>5s} {'items/s':>8s} {'vs base':>8s} {f'{args.target_items} items':>11s} {'same':>9s} {'load':>5s}")
    for row in rows:
        same = sum(a == b for a, b in zip(row["outputs"], base["outputs"]))
        projected = args.target_items / row["items_s"]
        print(f"{row['mode']:14s} {row['batch']:5d} {row['items_s']:8.2f} {row['items_s'] / base['items_s']:7.2f}x "
              f"{projected:9.0f} s {same:4d}/{len(items):<4d} {row['load']:5.1f}")
    print(f"baseline: {modes[0]} batch {baseline_batch}; goal: {args.target_items} items in <= 180 s "
          f"(>= {args.target_items / 180:.1f} items/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
