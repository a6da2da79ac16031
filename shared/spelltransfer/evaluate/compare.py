"""Compare two saved evaluations item by item (the predictions JSONL beside each result JSON).

Items are paired by (task, prompt, gold answer), so two runs of the same data and ``--limit``
pair completely whatever their batch sizes; items only one run has are left out and counted.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from spelltransfer.errors import DataError
from spelltransfer.evaluate.evaluator import EvalResult, Prediction
from spelltransfer.evaluate.stats import PairedComparison, compare_paired


@dataclass
class Comparison:
    """Per-task paired comparison of B against A, plus notes on what could not be paired."""

    tasks: dict[str, PairedComparison]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"tasks": {task: paired.to_dict() for task, paired in self.tasks.items()}, "notes": self.notes}


def _keyed(predictions: list[Prediction]) -> dict[tuple, Prediction]:
    # A repeated item (same task, prompt, gold) is told apart by its occurrence number.
    seen: Counter = Counter()
    keyed = {}
    for prediction in predictions:
        key = prediction.key()
        keyed[key + (seen[key],)] = prediction
        seen[key] += 1
    return keyed


def compare_predictions(a: list[Prediction], b: list[Prediction]) -> Comparison:
    keyed_a, keyed_b = _keyed(a), _keyed(b)
    shared = [key for key in keyed_a if key in keyed_b]
    if not shared:
        raise DataError("the two results share no items (different data, split or tasks?); nothing to pair")
    notes = []
    if len(shared) < len(keyed_a) or len(shared) < len(keyed_b):
        notes.append(f"paired {len(shared)} items; {len(keyed_a) - len(shared)} only in A, {len(keyed_b) - len(shared)} only in B")
    tasks: dict[str, PairedComparison] = {}
    for task in dict.fromkeys(key[0] for key in shared):
        keys = [key for key in shared if key[0] == task]
        tasks[task] = compare_paired([keyed_a[k].correct for k in keys], [keyed_b[k].correct for k in keys])
    return Comparison(tasks=tasks, notes=notes)


def compare_results(path_a: str | os.PathLike, path_b: str | os.PathLike) -> Comparison:
    """Load two result JSONs with their predictions and compare B against A per task."""
    result_a = EvalResult.load(path_a)
    result_b = EvalResult.load(path_b)
    return compare_predictions(result_a.predictions, result_b.predictions)
