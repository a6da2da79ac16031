"""Base vs tuned, task by task: the transfer gain with a paired interval and McNemar's test.

Two evaluations are paired item by item (same task, prompt and gold answer), so the interval
reflects only the items on which the models disagree. The trivial baseline and the share of
answers given in the asked form sit beside each accuracy, so that a "gain" that is really a
model learning to always answer "1" (about half of count questions) cannot pass unnoticed.

    report = compare_results(EvalResult.load("base.json"), EvalResult.load("tuned.json"))
    print(report.markdown())
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from spelltransfer.atomic import write_text_atomic
from spelltransfer.errors import DataError
from spelltransfer.evaluate.evaluator import EvalResult
from spelltransfer.evaluate.compare import compare_predictions
from spelltransfer.evaluate.stats import wilson_interval


@dataclass(frozen=True)
class TaskTransfer:
    """One task's row: accuracies with Wilson intervals, paired gain, McNemar p, context."""

    task: str
    n: int
    base_accuracy: float
    base_ci95: tuple[float, float]
    tuned_accuracy: float
    tuned_ci95: tuple[float, float]
    gain: float
    gain_ci95: tuple[float, float]
    mcnemar_p: float
    trivial_baseline: float
    base_in_form: float
    tuned_in_form: float


@dataclass(frozen=True)
class TransferReport:
    base: str
    tuned: str
    rows: list[TaskTransfer]

    def to_dict(self) -> dict:
        return {"base": self.base, "tuned": self.tuned, "tasks": {row.task: asdict(row) for row in self.rows}}

    def markdown(self) -> str:
        lines = [
            f"Base: `{self.base}` — tuned: `{self.tuned}` (95 % intervals; gain interval paired, Newcombe)",
            "",
            "| task | n | base | tuned | gain [95 % CI] | McNemar p | trivial | in form (base → tuned) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.task} | {r.n} | {_pct(r.base_accuracy)} [{_pct(r.base_ci95[0])}, {_pct(r.base_ci95[1])}] "
                f"| {_pct(r.tuned_accuracy)} [{_pct(r.tuned_ci95[0])}, {_pct(r.tuned_ci95[1])}] "
                f"| {r.gain * 100:+.1f} pp [{r.gain_ci95[0] * 100:+.1f}, {r.gain_ci95[1] * 100:+.1f}] "
                f"| {r.mcnemar_p:.3g} | {_pct(r.trivial_baseline)} | {_pct(r.base_in_form)} → {_pct(r.tuned_in_form)} |"
            )
        return "\n".join(lines) + "\n"

    def rich_table(self):
        from rich.table import Table

        table = Table(title="Transfer: base vs tuned (95 % intervals)")
        for column in ("task", "n", "base", "tuned", "gain [95% CI]", "McNemar p", "trivial", "in form"):
            table.add_column(column, justify="right" if column != "task" else "left")
        for r in self.rows:
            table.add_row(
                r.task, str(r.n),
                f"{_pct(r.base_accuracy)} [{_pct(r.base_ci95[0])}, {_pct(r.base_ci95[1])}]",
                f"{_pct(r.tuned_accuracy)} [{_pct(r.tuned_ci95[0])}, {_pct(r.tuned_ci95[1])}]",
                f"{r.gain * 100:+.1f} pp [{r.gain_ci95[0] * 100:+.1f}, {r.gain_ci95[1] * 100:+.1f}]",
                f"{r.mcnemar_p:.3g}", _pct(r.trivial_baseline), f"{_pct(r.base_in_form)} → {_pct(r.tuned_in_form)}",
            )
        return table

    def save(self, out_dir: str | os.PathLike, stem: str = "transfer") -> tuple[Path, Path]:
        """Write ``stem.json`` and ``stem.md`` atomically into ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for suffix, text in ((".json", json.dumps(self.to_dict(), indent=2) + "\n"), (".md", self.markdown())):
            paths.append(write_text_atomic(out_dir / f"{stem}{suffix}", text, fsync=False))
        return paths[0], paths[1]


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def compare_results(base: EvalResult, tuned: EvalResult) -> TransferReport:
    """Pair the two results item by item (``evaluate.compare``) and add each task's context."""
    if not base.predictions or not tuned.predictions:
        raise DataError("comparison needs predictions for both results (the .predictions.jsonl beside each JSON)")
    comparison = compare_predictions(base.predictions, tuned.predictions)
    rows = []
    for task, paired in comparison.tasks.items():
        n = paired.n
        rows.append(TaskTransfer(
            task=task, n=n,
            base_accuracy=paired.accuracy_a, base_ci95=wilson_interval(paired.both_right + paired.a_only, n),
            tuned_accuracy=paired.accuracy_b, tuned_ci95=wilson_interval(paired.both_right + paired.b_only, n),
            gain=paired.gain, gain_ci95=tuple(paired.ci95), mcnemar_p=paired.mcnemar_p,
            trivial_baseline=base.tasks[task].trivial_baseline,
            base_in_form=base.tasks[task].answered_in_form,
            tuned_in_form=tuned.tasks[task].answered_in_form,
        ))
    return TransferReport(base=_label(base), tuned=_label(tuned), rows=rows)


def _label(result: EvalResult) -> str:
    return result.model + (f" + {result.adapter}" if result.adapter else "")
