"""The training engine on the GPU: ``spelltransfer train`` with backends hf and unsloth, same config.

    python benchmarks/engine_gpu.py --data DIR --steps 300 --out results/benchmarks

For each backend: ``python -m spelltransfer.train`` (Unsloth imported first) with tracking off,
then ``spelltransfer eval --adapter DIR/final`` on the validation split. Reports wall time,
tokens/s (the trainer's ``tokens_seen`` over its ``train_seconds``) and the accuracies reached,
to ``OUT/engine_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gpu_common as common  # noqa: E402


def run(command: list[str], timeout: int) -> tuple[int | str, float, str]:
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        code, text = done.returncode, done.stdout[-3000:] + done.stderr[-3000:]
    except subprocess.TimeoutExpired as error:
        code, text = "timeout", str(error)[-2000:]
    return code, time.perf_counter() - started, text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default="configs/training/config.yaml")
    parser.add_argument("--backends", default="hf,unsloth")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-limit", type=int, default=100)
    parser.add_argument("--work", default="/tmp/engine_gpu")
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--timeout", type=int, default=240)
    parser.add_argument("--set", action="append", default=[], dest="extra")
    args = parser.parse_args(argv)
    report = {"device": common.device_name(), "steps": args.steps, "batch_size": args.batch_size, "runs": {}}
    for backend in args.backends.split(","):
        out_dir = Path(args.work) / backend
        overrides = [f"training.backend={backend}", f"training.data_dir={args.data}", f"training.max_steps={args.steps}",
                     f"training.batch_size={args.batch_size}", "training.grad_accum=1", "training.eval_steps=100",
                     "training.save_steps=100", "training.tracking.mlflow.enabled=false",
                     "training.tracking.wandb.enabled=false", f"training.plot_dir={args.work}/plots", *args.extra]
        command = [sys.executable, "-m", "spelltransfer.train", "--config", args.config, "--output-dir", str(out_dir), "--quiet"]
        for item in overrides:
            command += ["--set", item]
        code, seconds, text = run(command, args.timeout)
        entry = {"exit": code, "wall_s": seconds}
        metrics_path = out_dir / "metrics.json"
        if code == 0 and metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
            entry.update(tokens_seen=metrics.get("tokens_seen"), train_s=metrics.get("train_seconds_this_session"),
                         stop=metrics.get("stop"), final=metrics.get("final"), backend_used=metrics.get("backend"))
            if entry["train_s"]:
                entry["tokens_per_s"] = entry["tokens_seen"] / entry["train_s"]
            result = Path(args.out) / f"engine_{backend}_eval.json"
            ecode, eseconds, etext = run([sys.executable, "-m", "spelltransfer.cli", "eval", "--adapter", str(out_dir / "final"),
                                          "--data", args.data, "--split", "validation", "--limit", str(args.eval_limit),
                                          "--batch-size", "128", "--out", str(result), "--no-progress"], args.timeout)
            entry.update(eval_exit=ecode, eval_s=eseconds)
            if ecode == 0 and result.is_file():
                tasks = json.loads(result.read_text())["tasks"]
                entry["accuracy"] = {task: m["accuracy"] for task, m in tasks.items()}
            else:
                entry["eval_log"] = etext
        else:
            entry["log"] = text
        report["runs"][backend] = entry
        print(json.dumps({backend: {k: v for k, v in entry.items() if k not in ("log", "eval_log")}}), flush=True)
        if "log" in entry or "eval_log" in entry:
            print(entry.get("log", "") + entry.get("eval_log", ""), flush=True)
    common.write_atomic(Path(args.out) / "engine_gpu.json", json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
