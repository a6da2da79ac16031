"""A 64-trial random sample of the seed grid, trained packed on one GPU, then evaluated; vs sequential HF.

    python benchmarks/sweep_gpu.py --data DIR --out results/benchmarks [--time-budget 480]

1. ``sample_seed_grid(64)``: r 4-32, alpha 8-64, lr 1e-4..1e-3 (log), micro-batch 4-32, grad-accum
   1-8 (batch_size = micro x accum, the seed's meaning), steps 500-5000 capped at 1000.
2. All trials trained at once by ``PackedTrainer`` (bf16 base, fp32 adapters): wall time,
   aggregate tokens/s. If ``--time-budget`` runs out first, the state is saved to ``--state``
   and a second invocation with ``--resume`` continues (the GPU machine limits one command to
   10 minutes).
3. Every trial's adapter exported as a PEFT folder; every trial evaluated on the validation items
   (spelling / position / count) by batched greedy generation of all trials at once, scored with
   ``spelltransfer.evaluate.evaluator.score``.
4. Baseline: plain sequential HF training (``spelltransfer.train.backends.hf`` and the trainer's
   step) timed on a few of the same trials, and a per-micro-batch timing table that extrapolates
   the sequential time of all 64 trials.
Writes ``OUT/sweep_gpu.json`` (+ ``sweep_gpu_trials.csv``) and prints a summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gpu_common as common  # noqa: E402


def train_packed(args, train, trials, path, tokenizer):
    import torch

    from spelltransfer.models import load_model
    from spelltransfer.train.packed import PackedTrainer

    model = load_model(args.model, dtype="auto", device=args.device)
    trainer = PackedTrainer(model, tokenizer, train, trials, max_chunk_tokens=args.chunk_tokens, base_model_path=path,
                            **common.PACKED_MODES[args.mode])
    state_path = Path(args.state)
    resumed_at = 0
    previous_seconds = 0.0
    if args.resume and state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        trainer.load_state_dict(state)
        resumed_at = trainer.step_index
        previous_seconds = state.get("train_seconds", 0.0)
        print(f"resumed at packed step {resumed_at}", flush=True)
    total_steps = max(t.max_steps for t in trials)
    started = time.perf_counter()
    last = [started]

    def progress(stats):
        if stats.step % 50 == 0 or stats.step == total_steps:
            now = time.perf_counter()
            window = trainer.history.steps[-50:]
            tok = sum(s.tokens for s in window)
            print(f"step {stats.step}/{total_steps}  {tok / (now - last[0]):,.0f} tok/s  {now - started:.0f} s  "
                  f"active {sum(trainer.active())}  peak {common.peak_gb():.1f} GB", flush=True)
            last[0] = now

    common.reset_peak()
    trainer.train(on_step=progress, time_budget_s=args.time_budget)
    common.sync()
    seconds = time.perf_counter() - started
    steps = trainer.history.steps
    summary = {"packed_steps_this_run": len(steps), "packed_step_index": trainer.step_index, "total_packed_steps": total_steps,
               "train_seconds_this_run": seconds, "train_seconds_total": previous_seconds + seconds,
               "tokens_this_run": sum(s.tokens for s in steps), "padded_tokens_this_run": sum(s.padded_tokens for s in steps),
               "scored_tokens_this_run": sum(s.scored_tokens for s in steps), "resumed_at": resumed_at,
               "peak_gb": common.peak_gb(), "layout": trainer.layout, "kernel": trainer.kernel,
               "chunk_tokens": args.chunk_tokens, "r_max": trainer.weights.r_max, "mode": args.mode,
               "cuda_graphs": trainer.cuda_graphs, "fused": trainer.fused is not None,
               "compiled": bool(trainer.fused and trainer.fused.compiled)}
    summary["tokens_per_s"] = summary["tokens_this_run"] / seconds
    if not trainer.done():
        state = trainer.state_dict()
        state["train_seconds"] = previous_seconds + seconds
        tmp = state_path.with_name(state_path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, state_path)
        summary["saved_state"] = str(state_path)
    return trainer, model, summary


def evaluate(args, trainer, model, tokenizer, validation):
    from spelltransfer.models import PromptFormat
    from spelltransfer.train.packed import generate_for_trials
    from spelltransfer.train.packed.attention import ATTENTION_NAME

    try:
        from spelltransfer.evaluate.evaluator import score, token_budget
    except ImportError:  # the evaluator not installed: exact match on the normalised answer
        score = token_budget = None
    fmt = PromptFormat.from_tokenizer(tokenizer)
    items = []
    for task in ("spelling", "position", "count"):
        items += [r for r in validation if r["task"] == task][: args.eval_per_task]
    n_trials = len(trainer.trials)
    results = {k: {} for k in range(n_trials)}
    started = time.perf_counter()
    generated = 0
    for task in ("spelling", "position", "count"):
        task_items = [r for r in items if r["task"] == task]
        if not task_items:
            continue
        budget = max(token_budget(r) for r in task_items) if token_budget else 40
        outs = generate_for_trials(model, tokenizer, trainer.routing, list(range(n_trials)),
                                   [fmt.prompt(r["prompt"]) for r in task_items], max_new_tokens=budget,
                                   rows_per_call=args.eval_rows, restore_attention=ATTENTION_NAME if trainer.layout == "varlen" else "sdpa")
        generated += n_trials * len(task_items)
        for k in range(n_trials):
            if score:
                correct = sum(score(item, text, i).correct for i, (item, text) in enumerate(zip(task_items, outs[k])))
            else:
                correct = sum(text.strip().lower() == item["answer"].lower() for item, text in zip(task_items, outs[k]))
            results[k][task] = correct / len(task_items)
    common.sync()
    seconds = time.perf_counter() - started
    return results, {"eval_seconds": seconds, "eval_items_per_trial": len(items), "eval_generations": generated,
                     "eval_generations_per_s": generated / seconds, "scorer": "evaluator.score" if score else "exact"}


def hf_baseline(args, train, trials):
    """Sequential HF+PEFT: per-micro-batch timing table, and full steps of a few trials."""
    import random

    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from spelltransfer.models import PromptFormat
    from spelltransfer.train.backends import get_backend
    from spelltransfer.train.dataset import BatchOrder, tokenize_example
    from spelltransfer.train.model_config import LoraSettings, ModelConfig

    table, measured = {}, []
    for trial in trials[: args.hf_trials]:
        loaded = get_backend("hf").load(ModelConfig(name=args.model, lora=LoraSettings(r=trial.r, alpha=int(trial.alpha))), trial.seed)
        model, tokenizer = loaded.model, loaded.tokenizer
        fmt = PromptFormat.from_tokenizer(tokenizer)
        examples = [tokenize_example(r, tokenizer, fmt, 128) for r in train]
        collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=trial.lr)
        order = BatchOrder(len(examples), trial.batch_size, trial.seed)
        model.train()

        def micro_step(chunk):
            batch = collator([{"input_ids": e.input_ids, "labels": e.labels} for e in chunk])
            batch = {k: v.to(loaded.device) for k, v in batch.items()}
            with torch.autocast(loaded.device.split(":")[0], dtype=torch.bfloat16):
                loss = model(**batch).loss / trial.grad_accum
            loss.backward()
            return int(batch["attention_mask"].sum())

        def full_step(step):
            indices = order.batch(step)
            tokens = 0
            for start in range(0, len(indices), trial.micro_batch):
                tokens += micro_step([examples[i] for i in indices[start:start + trial.micro_batch]])
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return tokens

        for step in range(2):
            full_step(step)
        tokens = 0
        with common.Timer() as timer:
            for step in range(2, 2 + args.hf_steps):
                tokens += full_step(step)
        per_step = timer.seconds / args.hf_steps
        measured.append({"trial_id": trial.trial_id, "micro_batch": trial.micro_batch, "grad_accum": trial.grad_accum,
                         "step_s": per_step, "tokens_per_s": tokens / timer.seconds,
                         "extrapolated_trial_s": per_step * trial.max_steps})
        if not table:  # micro-batch table, once: forward+backward per micro-batch size, and the optimizer step
            rng = random.Random(0)
            for b in (4, 8, 16, 32):
                for _ in range(2):
                    micro_step(rng.sample(examples, b))
                with common.Timer() as timer:
                    for _ in range(args.hf_steps):
                        micro_step(rng.sample(examples, b))
                table[b] = timer.seconds / args.hf_steps
            with common.Timer() as timer:
                for _ in range(args.hf_steps):
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
            table["optimizer"] = timer.seconds / args.hf_steps
            optimizer.zero_grad(set_to_none=True)
        del model, loaded, optimizer
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    extrapolated = sum(t.max_steps * (t.grad_accum * table[t.micro_batch] + table["optimizer"]) for t in trials)
    for m in measured:  # how well the table predicts a measured trial
        t = next(t for t in trials if t.trial_id == m["trial_id"])
        m["table_predicted_step_s"] = t.grad_accum * table[t.micro_batch] + table["optimizer"]
    return {"micro_batch_seconds": table, "measured_trials": measured, "extrapolated_sequential_s": extrapolated}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps-cap", type=int, default=1000)
    parser.add_argument("--chunk-tokens", type=int, default=32768)
    parser.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds (state saved)")
    parser.add_argument("--state", default="/tmp/sweep_gpu_state.pt")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--mode", choices=("graphs", "compiled", "nocompile"), default="graphs",
                        help="graphs: the HF decoder with MultiLoRALinear under CUDA graphs (default); compiled: the "
                             "fused decoder with torch.compile (faster, CUDA gradients wrong: docs/performance.md s.6); "
                             "nocompile: the fused decoder without torch.compile")
    parser.add_argument("--eval-per-task", type=int, default=100)
    parser.add_argument("--eval-rows", type=int, default=8192)
    parser.add_argument("--eval-if-unfinished", action="store_true", help="evaluate even when the budget stopped training")
    parser.add_argument("--hf-trials", type=int, default=3)
    parser.add_argument("--hf-steps", type=int, default=10)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--adapters", default="/tmp/sweep_adapters")
    args = parser.parse_args(argv)

    from spelltransfer.models import load_tokenizer, resolve_model_path
    from spelltransfer.train.packed import sample_seed_grid

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(args.model)
    train, validation = common.load_records(args.data)
    trials = sample_seed_grid(args.trials, seed=args.seed, max_steps_cap=args.max_steps_cap)
    report = {"device": common.device_name(), "trials": [t.model_dump() for t in trials],
              "work": {"examples": sum(t.batch_size * t.max_steps for t in trials)}}
    trainer, model, report["packed"] = train_packed(args, train, trials, path, tokenizer)
    print(json.dumps(report["packed"]), flush=True)
    finished = trainer.done()
    if finished or args.eval_if_unfinished:
        started = time.perf_counter()
        for k, trial in enumerate(trials):
            trainer.export(k, Path(args.adapters) / trial.trial_id)
        report["export_seconds"] = time.perf_counter() - started
        accuracies, report["eval"] = evaluate(args, trainer, model, tokenizer, validation)
        print(json.dumps(report["eval"]), flush=True)
        rows = []
        for k, trial in enumerate(trials):
            losses = trainer.history.losses[k]
            rows.append({**trial.model_dump(), "steps_done": len(losses), "final_loss": losses[-1] if losses else None,
                         **{f"{task}_accuracy": acc for task, acc in accuracies[k].items()}})
        report["trial_results"] = rows
        with open(out_dir / "sweep_gpu_trials.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        best = max(rows, key=lambda r: r.get("spelling_accuracy", 0))
        print(f"best spelling: {best['trial_id']} r={best['r']} lr={best['lr']} "
              f"spelling {best.get('spelling_accuracy')} position {best.get('position_accuracy')} count {best.get('count_accuracy')}")
    del trainer, model
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not args.skip_hf:
        report["hf_sequential"] = hf_baseline(args, train, trials)
        packed_total = report["packed"]["train_seconds_total"]
        if finished:
            report["speedup_vs_sequential_hf"] = report["hf_sequential"]["extrapolated_sequential_s"] / packed_total
        print(json.dumps(report["hf_sequential"]), flush=True)
    report["wall_seconds_this_run"] = time.perf_counter() - wall
    name = "sweep_gpu.json" if finished else f"sweep_gpu_part{report['packed']['packed_step_index']}.json"
    common.write_atomic(out_dir / name, json.dumps(report, indent=1))
    print(f"wrote {out_dir / name}; wall {report['wall_seconds_this_run']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
