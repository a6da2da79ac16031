"""`spelltransfer analyse sweep`: which settings of a sweep go with spelling, and with transfer.

    spelltransfer analyse sweep lora-grid --baseline results/base-validation.json
    spelltransfer analyse sweep results/metrics/lora-grid/trials.csv --out results/analysis/lora-grid

The baseline is the untrained model evaluated on the sweep's validation items
(``spelltransfer eval --split validation --limit N``, N = the spec's ``transfer.eval_items_per_task``).
This module parses, calls ``spelltransfer.analyse.sweep`` and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from spelltransfer.errors import DataError

console = Console(width=140)
analyse_app = typer.Typer(help="Read results: which sweep settings transfer best.", no_args_is_help=True)


def _trials_csv(source: str, results_dir: Path) -> Path:
    path = Path(source)
    if path.suffix == ".csv" or path.exists():
        return path
    return results_dir / "metrics" / source / "trials.csv"


@analyse_app.command("sweep")
def sweep(
    source: str = typer.Argument(..., help="A sweep name (read from RESULTS_DIR/metrics/NAME/trials.csv) or a trials.csv path."),
    baseline: Optional[Path] = typer.Option(None, help="The untrained model's evaluation on the same validation items (gains)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default RESULTS_DIR/analysis/NAME)."),
    results_dir: Path = typer.Option(Path("results"), help="The sweep's results_dir."),
    top: int = typer.Option(5, min=1, help="Best trials to list."),
    figures: bool = typer.Option(True, help="Write PNG figures."),
) -> None:
    """Correlate each parameter with each task's accuracy, spelling with transfer; list the best trials."""
    from spelltransfer.analyse.sweep import TASKS, SweepAnalysisConfig, analyse_sweep, baseline_from_eval
    from spelltransfer.evaluate.evaluator import EvalResult

    path = _trials_csv(source, results_dir)
    base = None
    if baseline is not None:
        result = EvalResult.load(baseline, with_predictions=False)
        if result.adapter:
            raise DataError(f"--baseline {baseline}: is an evaluation of adapter {result.adapter}, not the untrained model")
        base = baseline_from_eval(result)
    analysis = analyse_sweep(path, baseline=base, config=SweepAnalysisConfig(top=top))
    out = out or results_dir / "analysis" / (path.parent.name if path.name == "trials.csv" else path.stem)
    written = analysis.save(out, figures=figures)

    table = Table(title=f"{analysis.trials} trials: Spearman rho (BH-adjusted p)")
    table.add_column("parameter")
    for task in TASKS:
        table.add_column(task, justify="right")
    for param in analysis.params:
        cells = []
        for task in TASKS:
            effect = next(e for e in analysis.effects if e.param == param and e.task == task)
            cells.append("–" if effect.rho is None else f"{effect.rho:+.2f} (p {effect.p_adjusted:.2g})")
        table.add_row(param, *cells)
    console.print(table)
    for task, effect in analysis.spelling_vs_transfer.items():
        text = "–" if effect.rho is None else f"rho {effect.rho:+.2f} (p {effect.p:.2g}, {effect.trials} trials)"
        console.print(f"spelling vs {task}: {text}")
    best = analysis.top[0]
    console.print(f"best trial {best.number}: objective {best.objective} with "
                  + ", ".join(f"{k}={v}" for k, v in best.params.items()))
    console.print(f"report: {written['markdown']}")


def register(app: typer.Typer) -> None:
    """Add ``analyse`` to the root app."""
    app.add_typer(analyse_app, name="analyse")
