"""`spelltransfer data build|show`: build a dataset folder, print samples of one.

    spelltransfer data build --out data/spelling --seed 0
    spelltransfer data show data/spelling --split test --task count -n 5
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from spelltransfer.data.config import DatasetConfig

data_app = typer.Typer(help="Build and inspect the spelling/position/count datasets.", no_args_is_help=True)
console = Console()
_STAGES = {"tokenizer": "load tokenizer", "words": "select words", "train": "build train",
           "validation": "build validation", "test": "build test", "write": "write jsonl + hf + manifest"}


def _help(field: str) -> str:
    info = DatasetConfig.model_fields[field]
    return f"{info.description} [default: {info.default}]"


@data_app.command("build")
def build(
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (created or refreshed)."),
    seed: Optional[int] = typer.Option(None, help=_help("seed"), show_default=False),
    model: Optional[str] = typer.Option(None, help=_help("model"), show_default=False),
    train_source: Optional[str] = typer.Option(None, help=_help("train_source"), show_default=False),
    train_words: Optional[int] = typer.Option(None, help=_help("train_words"), show_default=False),
    coverage: Optional[bool] = typer.Option(None, help=_help("coverage"), show_default=False),
    presentations: Optional[str] = typer.Option(None, help=_help("presentations") + " Comma-separated.", show_default=False),
    eval_words: Optional[int] = typer.Option(None, help=_help("eval_words"), show_default=False),
    validation_fraction: Optional[float] = typer.Option(None, help=_help("validation_fraction"), show_default=False),
    train_size: Optional[int] = typer.Option(None, help=_help("train_size"), show_default=False),
    validation_per_task: Optional[int] = typer.Option(None, help=_help("validation_per_task"), show_default=False),
    test_per_task: Optional[int] = typer.Option(None, help=_help("test_per_task"), show_default=False),
) -> None:
    """Build DIR/{train,validation,test}.jsonl, DIR/hf/, DIR/words.json and DIR/manifest.json."""
    from spelltransfer.data.build import build_dataset

    shown = tuple(p.strip() for p in presentations.split(",") if p.strip()) if presentations is not None else None
    given = {k: v for k, v in dict(seed=seed, model=model, train_source=train_source, train_words=train_words,
                                    coverage=coverage, presentations=shown, eval_words=eval_words,
                                    validation_fraction=validation_fraction, train_size=train_size,
                                    validation_per_task=validation_per_task, test_per_task=test_per_task).items()
             if v is not None}
    config = DatasetConfig.create(**given)  # fail on bad values before loading anything
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bars:
        ids = {stage: bars.add_task(label, total=1, visible=False) for stage, label in _STAGES.items()}

        def report(stage: str, done: int, total: int) -> None:
            if stage in ids:
                bars.update(ids[stage], completed=done, total=total, visible=True)

        manifest = build_dataset(out, config, progress=report)

    table = Table(title=f"dataset {out}  (seed {manifest['seed']}, model {manifest['model']})")
    table.add_column("split")
    for task in ("spelling", "position", "count"):
        table.add_column(task, justify="right")
    table.add_column("words", justify="right")
    for split, counts in manifest["counts"].items():
        table.add_row(split, *(str(counts.get(t, "-")) for t in ("spelling", "position", "count")),
                      str(manifest["words"][split]))
    console.print(table)
    words, coverage_report = manifest["words"], manifest["piece_coverage"]
    console.print(f"training words: {words['train_single_token']} single-token + {words['train_multi_token']} multi-token "
                  f"({words['train_source']}); test pieces also in training words: "
                  f"{coverage_report['test_pieces_in_train']:.1%} of {coverage_report['test_pieces']}", highlight=False)
    console.print(f"content sha256 {manifest['content_sha256']}  built in {manifest['build_seconds']} s", highlight=False)


@data_app.command("show")
def show(
    data_dir: Path = typer.Argument(..., help="Dataset folder (from `data build`) or a .jsonl file."),
    split: str = typer.Option("test", help="train, validation or test."),
    task: Optional[str] = typer.Option(None, help="Only this task: spelling, position or count."),
    n: int = typer.Option(5, "-n", "--n", min=1, help="How many examples to print."),
) -> None:
    """Print the first N examples of a split (optionally one task) as a table."""
    from spelltransfer.data.io import load_examples, load_split
    from spelltransfer.data.tasks import get_task
    from spelltransfer.errors import DataError

    if task is not None:
        get_task(task)
    examples = load_examples(data_dir) if data_dir.is_file() else load_split(data_dir, split)
    chosen = [e for e in examples if task is None or e.task == task][:n]
    if not chosen:
        raise DataError(f"{data_dir}: no '{task}' examples in split '{split}'")
    table = Table(title=f"{data_dir} · {split}" + (f" · {task}" if task else "") + f" · {len(chosen)} of {len(examples)}")
    for column in ("template", "word", "prompt", "answer"):
        table.add_column(column, overflow="fold")
    for example in chosen:
        table.add_row(example.template_id, example.word, example.prompt, example.answer)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `data build` and `data show` to the root app."""
    app.add_typer(data_app, name="data")
