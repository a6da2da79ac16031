"""GPU self-check of the packed trainer's paths on a random model of SmolLM2's layer shape (no files needed).

    python benchmarks/fused_selfcheck.py [--layers 4] [--steps 5]

The same 8 trials (different r, alpha, lr, batch, grad-accum) for a few steps in each mode; per-trial
losses against the eager HF-decoder path, which the CPU tests tie to PEFT. bf16 base: agreement is
to bf16 noise (~1e-2 relative), not 1e-5. Exit 1 when a mode disagrees by more than --tol.
Modes (``_gpu_common.PACKED_MODES``): eager (fused decoder, no graphs), graphs (the default: HF
decoder under CUDA graphs), fused graphs without (nocompile) and with torch.compile (compiled).
Also prints each mode's mean step time (compile excluded: after warm-up).

Needs pydantic (it imports ``spelltransfer.train.packed``, whose init imports the trainer and ``TrialSpec``):
on a GPU machine without it, ``benchmarks/graphs_gradcheck.py`` (its ``train ...`` rows) runs the same kind of
own-gradient comparison through ``GraphedChunks`` with the packed modules alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gpu_common as common  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--tol", type=float, default=3e-2)
    parser.add_argument("--chunk-tokens", type=int, default=8192)
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of the eager modes only")
    parser.add_argument("--lr", type=float, default=1e-3, help="large enough that the losses move (e.g. 2e-2)")
    parser.add_argument("--modes", default=None, help="comma-separated subset of the modes (eager-unfused is the reference)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from spelltransfer.train.packed import PackedTrainer, TrialSpec
    from spelltransfer.train.packed.batches import PreparedExample

    rng = np.random.default_rng(0)
    examples = []
    for _ in range(512):
        n = int(rng.integers(30, 70))
        ids = rng.integers(3, 49152, size=n)
        answer = np.arange(n - 11, n - 1)
        examples.append(PreparedExample(ids, answer, ids[answer + 1]))
    trials = [TrialSpec(trial_id=f"t{i}", seed=i + 1, r=[4, 8, 16, 32][i % 4], alpha=[8, 16, 32, 64][i % 3],
                        lr=args.lr, batch_size=[4, 8, 16, 32][i % 4] * (2 if i % 2 else 1), grad_accum=2 if i % 2 else 1,
                        max_steps=args.steps + 3) for i in range(8)]
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=args.layers,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=2048,
                         rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=0)
    names = ["eager-unfused", "eager", "graphs", "nocompile", "compiled"]
    modes = {name: common.PACKED_MODES[name] for name in names}
    if args.modes:
        modes = {m: modes[m] for m in ["eager-unfused"] + [m for m in args.modes.split(",") if m != "eager-unfused"]}
    losses, rows = {}, []
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for mode, kwargs in modes.items():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(args.device, torch.bfloat16 if args.device == "cuda" else torch.float32)
        row = {"mode": mode}
        try:
            trainer = PackedTrainer(model, tokenizer, [{}], trials, prepared=examples, max_chunk_tokens=args.chunk_tokens,
                                    layout="varlen", **kwargs)
            row.update(fused=trainer.fused is not None, compiled=bool(trainer.fused and trainer.fused.compiled),
                       graphs=trainer.cuda_graphs, kernel=trainer.kernel, layout=trainer.layout)
            started = time.perf_counter()
            trainer.train(max_packed_steps=3)
            sync()
            row["warmup_s"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            trainer.train(max_packed_steps=3 + args.steps)
            sync()
            row["step_ms"] = round(1000 * (time.perf_counter() - started) / args.steps, 1)
            row["graphs_after"] = trainer.cuda_graphs
            row["compiled_after"] = bool(trainer.fused and trainer.fused.compiled)
            losses[mode] = trainer.history.losses
        except Exception as error:  # noqa: BLE001 - report every mode
            import traceback

            traceback.print_exc()
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        rows.append(row)
        del model
        if args.device == "cuda":
            torch.cuda.empty_cache()
    ref = losses.get("eager-unfused")
    worst = 0.0
    for row in rows:
        if ref is not None and row["mode"] in losses:
            diff = max(abs(a - b) / max(abs(b), 1e-6) for la, lb in zip(losses[row["mode"]], ref) for a, b in zip(la, lb))
            row["max_rel_loss_diff"] = diff
            worst = max(worst, diff)
        print(json.dumps(row), flush=True)
    failed = ref is None or any("error" in r for r in rows) or worst > args.tol
    print(f"fused self-check: {'FAILED' if failed else 'ok'} (worst relative loss difference {worst:.2e}, tol {args.tol})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
