"""A balanced design: the first trials of a study, chosen so every value of every parameter is tried.

``balanced_design(levels, n, seed)`` returns ``n`` points over the parameters' finite values. Each
parameter's column holds every value ``n // k`` or ``n // k + 1`` times (k = its number of values),
in a random order; of a few hundred seeded candidates, the one whose *pairs* of values are spread
most evenly (least squared deviation of every two columns' co-occurrence counts from uniform) is
kept -- an orthogonal array's balance where one exists at that size, close to it otherwise.

``enqueue_design(study, spec)`` puts those points in a new study with ``study.enqueue_trial``: the
sampler's ``ask`` hands them out first (Optuna's WAITING trials), then the spec's sampler (TPE)
continues from their results.
"""

from __future__ import annotations

import random
from typing import Any

import optuna

from spelltransfer.sweep.spec import SweepSpec

DESIGN_ATTR = "design_index"  # user attribute of an enqueued design trial: its row in the design
CANDIDATES = 300


def balanced_design(levels: dict[str, list[Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` points, each value of each parameter ``n // k`` or ``n // k + 1`` times; deterministic in ``seed``."""
    if n < 1:
        return []
    names = list(levels)
    rng = random.Random(seed)

    def column(values: list[Any]) -> list[int]:
        k = len(values)
        indices = [i % k for i in range(n)]
        rng.shuffle(indices)
        return indices

    best, best_score = None, None
    for _ in range(CANDIDATES):
        columns = [column(levels[name]) for name in names]
        score = _pair_imbalance(columns, [len(levels[name]) for name in names], n)
        if best_score is None or score < best_score:
            best, best_score = columns, score
        if score == 0:
            break
    return [{name: levels[name][best[j][i]] for j, name in enumerate(names)} for i in range(n)]


def _pair_imbalance(columns: list[list[int]], sizes: list[int], n: int) -> float:
    score = 0.0
    for a in range(len(columns)):
        for b in range(a + 1, len(columns)):
            expected = n / (sizes[a] * sizes[b])
            counts: dict[tuple[int, int], int] = {}
            for x, y in zip(columns[a], columns[b]):
                counts[(x, y)] = counts.get((x, y), 0) + 1
            cells = sizes[a] * sizes[b]
            score += sum((c - expected) ** 2 for c in counts.values()) + (cells - len(counts)) * expected ** 2
    return score


def design_levels(spec: SweepSpec) -> dict[str, list[Any]]:
    """Each parameter's finite values (``values``, an int range's grid, a stepped float range)."""
    return {name: parameter.grid_values(name) for name, parameter in spec.parameters.items()}


def enqueue_design(study: optuna.Study, spec: SweepSpec) -> int:
    """Enqueue the spec's design in a study that has no trial yet; how many were enqueued."""
    if spec.design.kind != "balanced" or study.get_trials(deepcopy=False):
        return 0
    points = balanced_design(design_levels(spec), spec.design.trials, spec.design.seed)
    for index, params in enumerate(points):
        study.enqueue_trial(params, user_attrs={DESIGN_ATTR: index})
    return len(points)
