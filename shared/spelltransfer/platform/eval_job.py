"""One evaluation as a child process: ``python -m spelltransfer.platform.eval_job ...``.

The trainer worker (validation accuracies of a finished trial) and the evaluator service run
evaluations as separate processes, so a model load never lives in a long-running service and a
cancel can stop it as a process group. This is a thin wrapper over
``spelltransfer.evaluate.evaluator.evaluate_model`` (the engine ``spelltransfer eval`` uses);
the result file is the same ``{"tasks": {task: {"accuracy", "ci95", "n", ...}}}``.

``--run-dir DIR`` takes the model, data folder, tasks and items per task from a training run's
resolved ``DIR/config.yaml`` and evaluates ``DIR/final`` on the validation split. When that config
enables W&B, the per-task accuracies and a table of (at most ``WANDB_TABLE_ROWS``) predictions go
to a W&B run ``<run>-validation`` (offline by default; grouped by the worker's ``WANDB_RUN_GROUP``).
Exit codes: 0 done, 2 bad input (message on stderr), anything else a crash.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spelltransfer.errors import SpellTransferError
from spelltransfer.run_folder import RunFolder

WANDB_TABLE_ROWS = 200
PREDICTION_COLUMNS = ("task", "word", "prompt", "gold", "output", "extracted", "correct")


def _run_config(run_dir: Path) -> dict:
    from spelltransfer.safe_yaml import load_yaml_file

    path = RunFolder(run_dir).config
    config = load_yaml_file(path)
    if not isinstance(config, dict):
        raise SpellTransferError(f"{path}: not a resolved training config (a mapping of sections)")
    return config


def _from_run_dir(run_dir: Path) -> dict:
    config = _run_config(run_dir)
    transfer = config.get("transfer") or {}
    return {"model": str(config["model"]["name"]), "adapter": str(RunFolder(run_dir).final),
            "data": str(config["training"]["data_dir"]), "split": "validation",
            "tasks": list(transfer.get("eval_tasks") or []) or None,
            "limit": transfer.get("eval_items_per_task"),
            "batch_size": int(config["training"].get("eval_batch_size") or 32),
            # The run's thread budget holds for its evaluation too: workers sharing the cores each
            # set it, and one evaluation at torch's default (every core) beside them oversubscribes.
            "num_threads": config["training"].get("num_threads")}


def log_to_wandb(run_dir: Path, result) -> str | None:
    """Log ``result`` (an ``EvalResult``) to W&B when the run's config enables it; returns the W&B run id.

    A W&B failure is a warning: the evaluation result on disk is what the worker reports.
    """
    import logging

    from spelltransfer.track.config import WandbConfig
    from spelltransfer.track.wandb_tracker import WandbTracker

    tracking = (_run_config(run_dir).get("training") or {}).get("tracking") or {}
    config = WandbConfig(**(tracking.get("wandb") or {}))
    if not config.enabled:
        return None
    tracker = WandbTracker(config, run_dir)
    try:
        run_id = tracker.start(f"{run_dir.name}-validation", {"run_dir": str(run_dir), "split": "validation"},
                               {"phase": "validation"}, None)
        metrics = {}
        for task, task_metrics in result.tasks.items():
            metrics[f"validation/{task}_accuracy"] = task_metrics.accuracy
            metrics[f"validation/{task}_n"] = task_metrics.n
        tracker.log_metrics(metrics, step=0)
        rows = [[getattr(p, column) for column in PREDICTION_COLUMNS] for p in result.predictions[:WANDB_TABLE_ROWS]]
        tracker.log_table("validation/predictions", list(PREDICTION_COLUMNS), rows, step=0)
        tracker.finish("FINISHED")
        return run_id
    except Exception as error:  # noqa: BLE001 - tracking never fails an evaluation
        logging.getLogger(__name__).warning("W&B logging of %s failed: %s", run_dir, error)
        return None


def run(model: str, adapter: str | None, data: str, split: str, out: str, tasks: list[str] | None = None,
        limit: int | None = None, batch_size: int = 32, num_threads: int | None = None):
    from spelltransfer.data import load_split
    from spelltransfer.evaluate.evaluator import evaluate_model

    if num_threads is not None:
        if int(num_threads) < 1:
            raise SpellTransferError(f"num_threads must be >= 1, got {num_threads}")
        import torch

        torch.set_num_threads(int(num_threads))

    return evaluate_model(model, load_split(data, split), adapter=adapter or None, tasks=tasks, limit=limit or None,
                   batch_size=batch_size, out=out, data=data, split=split, progress=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spelltransfer.platform.eval_job", description=__doc__)
    parser.add_argument("--run-dir", type=Path, help="A training run folder: evaluate DIR/final as its config says.")
    parser.add_argument("--model", help="Model name or folder.")
    parser.add_argument("--adapter", default="", help="PEFT adapter folder (empty = base model).")
    parser.add_argument("--data", help="Dataset folder.")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--tasks", default="", help="Comma-separated tasks (default: all).")
    parser.add_argument("--limit", type=int, default=0, help="Items per task (0 = all).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    parser.add_argument("--out", required=True, help="Result JSON (predictions JSONL beside it).")
    args = parser.parse_args(argv)
    try:
        if args.run_dir is not None:
            job = _from_run_dir(args.run_dir)
        else:
            if not args.model or not args.data:
                raise SpellTransferError("--model and --data are required without --run-dir")
            job = {"model": args.model, "adapter": args.adapter, "data": args.data, "split": args.split,
                   "tasks": [t for t in args.tasks.split(",") if t] or None, "limit": args.limit,
                   "batch_size": args.batch_size, "num_threads": args.threads}
        result = run(out=args.out, **job)
        if args.run_dir is not None:
            log_to_wandb(args.run_dir, result)
    except SpellTransferError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
