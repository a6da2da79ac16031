"""`spelltransfer eval`: score a model on a dataset split or an external file, or compare two results.

    spelltransfer eval --model smollm2-135m --data data/spelling --split test --limit 300 --out results/base.json
    spelltransfer eval --model smollm2-135m --adapter runs/r1/final --data data/spelling --out results/r1.json
    spelltransfer eval --dataset extra.tsv --task count --out results/extra.json
    spelltransfer eval --compare results/base.json results/r1.json

This module only parses, calls ``spelltransfer.evaluate`` and prints; errors are typed
(``SpellTransferError``) and become a one-line message with exit code 2.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from spelltransfer.errors import ConfigError, DataError

# Tables have ~9 columns; below 120 characters (or when piped, where rich assumes 80) they wrap.
console = Console(width=max(shutil.get_terminal_size((120, 24)).columns, 120))


def _parse_tasks(tasks: str | None) -> list[str] | None:
    if tasks is None:
        return None
    from spelltransfer.evaluate.answers import TASKS

    names = [name.strip() for name in tasks.split(",") if name.strip()]
    unknown = [name for name in names if name not in TASKS]
    if not names or unknown:
        raise ConfigError(f"--tasks: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(TASKS)}")
    return names


def _print_result(result, out: Path) -> None:
    table = Table(title=f"{result.model}" + (f" + {result.adapter}" if result.adapter else "") + f"  ({result.n_items} items)")
    for column in ("task", "n", "accuracy", "95% CI", "answered", "in asked form", "trivial baseline", "edit sim."):
        table.add_column(column, justify="left" if column == "task" else "right")
    for task, metrics in result.tasks.items():
        table.add_row(
            task, str(metrics.n), f"{metrics.accuracy:.1%}", f"[{metrics.ci95[0]:.1%}, {metrics.ci95[1]:.1%}]",
            f"{metrics.answered:.0%}", f"{metrics.answered_in_form:.0%}",
            f"{metrics.trivial_baseline:.1%} ('{metrics.trivial_answer}')",
            "" if metrics.edit_similarity is None else f"{metrics.edit_similarity:.3f}",
        )
    console.print(table)
    console.print(f"{result.items_per_second:.2f} items/s ({result.seconds:.1f} s); wrote {out} and {out.stem}.predictions.jsonl")


def _print_comparison(path_a: Path, path_b: Path) -> None:
    from spelltransfer.evaluate.compare import compare_results

    comparison = compare_results(path_a, path_b)
    table = Table(title=f"B = {path_b.name}  vs  A = {path_a.name}  (paired on the same items)")
    for column in ("task", "paired n", "A", "B", "gain B-A", "95% CI (Newcombe)", "A only", "B only", "McNemar p"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for task, paired in comparison.tasks.items():
        table.add_row(
            task, str(paired.n), f"{paired.accuracy_a:.1%}", f"{paired.accuracy_b:.1%}", f"{paired.gain:+.1%}",
            f"[{paired.ci95[0]:+.1%}, {paired.ci95[1]:+.1%}]", str(paired.a_only), str(paired.b_only),
            f"{paired.mcnemar_p:.3g}",
        )
    console.print(table)
    for note in comparison.notes:
        console.print(f"[yellow]note:[/] {note}")


def eval_command(
    model: str = typer.Option("smollm2-135m", help="Model name (smollm2-135m), local HF folder or HF id."),
    adapter: Optional[Path] = typer.Option(None, help="PEFT adapter folder to apply (merged for speed)."),
    data: Optional[Path] = typer.Option(None, help="Dataset folder built by `spelltransfer data build`."),
    split: str = typer.Option("test", help="Split of --data: train, validation or test."),
    dataset: Optional[Path] = typer.Option(None, help="External set instead of --data: .jsonl (prompt/answer/task) or .tsv."),
    task: Optional[str] = typer.Option(None, help="Task of an external set without a task column (TSV)."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated tasks to evaluate (default: all present)."),
    limit: Optional[int] = typer.Option(None, help="First N items per task (deterministic)."),
    batch_size: int = typer.Option(32, help="Prompts generated together."),
    max_new_tokens: Optional[int] = typer.Option(None, help="One token budget for all items (default: per task)."),
    dtype: str = typer.Option("auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (1 is faster on a busy machine)."),
    out: Optional[Path] = typer.Option(None, help="Result JSON; predictions go to OUT's stem + .predictions.jsonl."),
    compare: Optional[tuple[Path, Path]] = typer.Option(None, help="Compare two result JSONs A B: per-task gain of B over A."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    mode: str = typer.Option("direct", help="Transfer mode: direct, spell_first (spell, then answer), spell_marked (spell with numbers/tallies, then answer) or format_aux (asked directly)."),
) -> None:
    """Evaluate a model by greedy generation, or compare two saved results (--compare A.json B.json)."""
    if compare:
        _print_comparison(Path(compare[0]), Path(compare[1]))
        return
    if out is None:
        raise ConfigError("--out FILE.json is required (where the result and its predictions are written)")
    if out.suffix != ".json":
        raise ConfigError(f"--out must end in .json, got {out}")
    if (data is None) == (dataset is None):
        raise ConfigError("give exactly one of --data DIR (with --split) or --dataset FILE")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1 (items per task), got {limit}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    task_names = _parse_tasks(tasks)

    from spelltransfer.data import load_external, load_split
    from spelltransfer.evaluate import HFGenerationEngine, evaluate_model

    if dataset is not None:
        examples = load_external(dataset, task=task)
        source, split_name = str(dataset), "external"
    else:
        if task is not None:
            raise ConfigError("--task is for --dataset files; use --tasks to choose tasks of --data")
        examples = load_split(data, split)
        source, split_name = str(data), split
    if not examples:
        raise DataError(f"{source}: no examples")
    # Check the selection before loading a model: an empty selection should fail in a second.
    from spelltransfer.evaluate.evaluator import as_items, select_items

    if not select_items(as_items(examples), task_names, limit):
        raise DataError(f"{source}: no examples for tasks {', '.join(task_names or [])}")

    engine = HFGenerationEngine(model, adapter_dir=adapter, batch_size=batch_size, dtype=dtype, device=device, num_threads=threads)
    result = evaluate_model(
        engine, examples, tasks=task_names, limit=limit, max_new_tokens=max_new_tokens,
        out=out, data=source, split=split_name, progress=progress, mode=mode,
    )
    _print_result(result, out)


def register(app: typer.Typer) -> None:
    """Add `eval` to the root app."""
    app.command("eval")(eval_command)
