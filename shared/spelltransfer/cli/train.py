"""`spelltransfer train`: parse options, load the config, run training with a progress bar.

Thin on purpose: everything happens in ``spelltransfer.train.run_training``; this module only
turns options into a config and events into a rich progress bar. On a GPU with Unsloth, run
``python -m spelltransfer.train ...`` (same options) so unsloth is imported before transformers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def train(
    config: Path = typer.Option(Path("configs/training/config.yaml"), "--config", "-c", help="Training config YAML (names the model/optimizer/scheduler/transfer files)."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="Override a field: section.key=value (repeatable), e.g. training.max_steps=100."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Run folder; default checkpoints/<experiment>/<run_name>."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest valid checkpoint in the run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (events.jsonl is written either way)."),
) -> None:
    """Fine-tune a LoRA adapter; writes DIR/{config.yaml,events.jsonl,checkpoints/,final/,metrics.json}."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from spelltransfer.train import load_training_config, run_training

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_config = load_training_config(config, overrides or [])
    progress = Progress(
        TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet,
    )
    task = progress.add_task("train", total=run_config.training.max_steps, status="loading model")
    last_eval: dict = {}

    def on_event(event: dict) -> None:
        kind, step = event["event"], event["step"]
        if kind == "start":
            progress.update(task, completed=step, status=f"{event['backend']} on {event['device']}")
            if event.get("resumed_from") is not None:
                progress.console.print(f"resumed from step {event['resumed_from']}")
        elif kind == "step":
            extra = f" eval_loss {last_eval['eval_loss']:.4f}" if "eval_loss" in last_eval else ""
            progress.update(task, completed=step, status=f"loss {event['loss']:.4f}{extra}")
        elif kind == "eval":
            last_eval.update(event["metrics"])
            progress.console.print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in event["metrics"].items()))
        elif kind == "done":
            progress.update(task, status=f"done ({event['reason']})")

    with progress:
        result = run_training(run_config, output_dir, resume=resume, on_event=on_event)
    best = f", best step {result.best_step} {result.best_metrics}" if result.best_step else ""
    console.print(f"stopped at step {result.stop_step} ({result.stop_reason}){best}")
    console.print(f"adapter: {result.adapter_dir}\nmetrics: {result.metrics_path}")
    typer.echo(str(result.output_dir))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("train")(train)
