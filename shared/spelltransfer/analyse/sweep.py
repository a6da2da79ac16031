"""Which settings transfer best: a sweep's trials, read parameter by parameter.

A sweep answers its question only if someone reads it: did a higher LoRA rank, a larger learning
rate or more steps make the model better at *spelling* — and did that skill carry over to the
letter-position and letter-count questions it never trained on? This module reads the sweep's
``trials.csv`` (one row per trial: its parameters, each task's validation accuracy and the number
of items behind it) and reports:

* **per parameter and task**, Spearman's rank correlation across the completed trials, with
  Benjamini–Hochberg-adjusted p-values (a sweep tests every parameter against every task at
  once, so unadjusted p-values would find "effects" in noise); and, for parameters with few
  distinct values (grids), each value's mean accuracy and the range over its trials;
* **does spelling go with transfer?** — Spearman of spelling accuracy against position and count
  accuracy across trials: a positive rho means the trials that learned to spell also answered
  the transfer questions better;
* **the best trials**, each task's accuracy with a Wilson interval, and — given the untrained
  model's evaluation on the same validation items — the gain over it with Newcombe's interval
  for two independent proportions (conservative: the items are in fact shared);
* figures: accuracy against each parameter, and transfer against spelling.

    analysis = analyse_sweep(Path("results/metrics/lora-grid/trials.csv"), baseline=EvalResult.load(...))
    analysis.save(Path("results/analysis/lora-grid"))
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spelltransfer.atomic import write_text_atomic
from spelltransfer.errors import DataError
from spelltransfer.evaluate.answers import TASKS
from spelltransfer.evaluate.stats import newcombe_interval, wilson_interval

TRANSFER_TASKS = ("position", "count")
# trials.csv columns that are not sweep parameters.
RESERVED = {"number", "state", "attempts", "worker", "objective", "steps", "stop_reason", "duration_s", "error",
            *(f"{t}_accuracy" for t in TASKS), *(f"{t}_n" for t in TASKS)}


@dataclass(frozen=True)
class SweepAnalysisConfig:
    """How the sweep is read."""

    max_levels: int = 8        # parameters with at most this many distinct values get a per-value table
    top: int = 5               # best trials listed
    alpha: float = 0.05        # significance level for the adjusted p-values
    min_trials: int = 3        # below this, no correlation is computed
    permutations: int = 9999   # Monte-Carlo permutations for p (exact below 8 trials)


@dataclass(frozen=True)
class TrialResult:
    number: int
    params: dict[str, str]
    accuracy: dict[str, float]     # task -> validation accuracy
    n: dict[str, int]              # task -> items behind it (absent in files written before it was recorded)
    objective: float | None


@dataclass(frozen=True)
class Level:
    """One value of a parameter: its trials' mean accuracy per task, and their range."""

    value: str
    trials: int
    mean: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]


@dataclass(frozen=True)
class ParamEffect:
    """A parameter against a task across trials."""

    param: str
    task: str
    trials: int
    rho: float | None              # Spearman; None when the parameter is not numeric, constant, or too few trials
    p: float | None
    p_adjusted: float | None = None


@dataclass(frozen=True)
class TopTrial:
    number: int
    params: dict[str, str]
    objective: float | None
    accuracy: dict[str, float]
    ci95: dict[str, tuple[float, float] | None]
    gain: dict[str, float] = field(default_factory=dict)
    gain_ci95: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepAnalysis:
    source: str
    trials: int                    # completed trials with accuracies
    excluded: dict[str, int]       # state -> trials left out (failed, pruned, running)
    params: list[str]
    effects: list[ParamEffect]
    levels: dict[str, list[Level]]
    spelling_vs_transfer: dict[str, ParamEffect]
    top: list[TopTrial]
    baseline: dict[str, dict] | None   # task -> {"accuracy", "n", "source"}
    config: SweepAnalysisConfig
    rows: list[TrialResult]            # every completed trial read (what the figures plot)

    def to_dict(self) -> dict:
        return asdict(self)

    def significant(self) -> list[ParamEffect]:
        return [e for e in self.effects if e.p_adjusted is not None and e.p_adjusted < self.config.alpha]

    def markdown(self, figures: list[str] | None = None) -> str:
        lines = [f"# Sweep analysis: `{self.source}`", ""]
        left_out = ", ".join(f"{n} {state}" for state, n in sorted(self.excluded.items())) or "none"
        lines += [f"{self.trials} completed trials with accuracies (left out: {left_out}). "
                  f"Parameters: {', '.join(f'`{p}`' for p in self.params) or 'none'}.", ""]
        if self.baseline:
            base = ", ".join(f"{t} {_pct(b['accuracy'])} (n={b['n']})" for t, b in self.baseline.items())
            lines += [f"Untrained baseline on the validation items: {base}.", ""]
        lines += ["## Which settings go with which accuracy", "",
                  "Spearman's rho across trials; permutation p, adjusted by Benjamini–Hochberg over all "
                  f"{sum(e.p is not None for e in self.effects)} tests; bold: adjusted p < {self.config.alpha}; "
                  "–: not numeric, constant, or fewer than "
                  f"{self.config.min_trials} trials.", "",
                  "| parameter | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
        for param in self.params:
            cells = []
            for task in TASKS:
                effect = next((e for e in self.effects if e.param == param and e.task == task), None)
                cells.append(_effect_cell(effect, self.config.alpha))
            lines.append(f"| `{param}` | " + " | ".join(cells) + " |")
        for param, levels in self.levels.items():
            lines += ["", f"### `{param}` by value", "", "| value | trials | " + " | ".join(TASKS) + " |",
                      "|---|---|" + "---|" * len(TASKS)]
            for level in levels:
                cells = [f"{_pct(level.mean[t])} ({_pct(level.low[t])}–{_pct(level.high[t])})" if t in level.mean
                         else "–" for t in TASKS]
                lines.append(f"| {level.value} | {level.trials} | " + " | ".join(cells) + " |")
        lines += ["", "## Does spelling go with transfer?", "",
                  "Spearman's rho of spelling accuracy against each transfer task across trials.", ""]
        for task, effect in self.spelling_vs_transfer.items():
            lines.append(f"- spelling vs {task}: {_effect_cell(effect, self.config.alpha)}")
        lines += ["", f"## Best {len(self.top)} trials (by objective)", ""]
        gains = bool(self.baseline)
        header = "| trial | objective | " + " | ".join(TASKS) + " | parameters |"
        lines += [header, "|---|---|" + "---|" * len(TASKS) + "---|"]
        for trial in self.top:
            cells = []
            for task in TASKS:
                if task not in trial.accuracy:
                    cells.append("–")
                    continue
                cell = _pct(trial.accuracy[task])
                if trial.ci95.get(task):
                    low, high = trial.ci95[task]
                    cell += f" [{_pct(low)}, {_pct(high)}]"
                if gains and task in trial.gain:
                    low, high = trial.gain_ci95[task]
                    cell += f"; gain {trial.gain[task] * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"
                cells.append(cell)
            objective = "–" if trial.objective is None else f"{trial.objective:.3f}"
            params = ", ".join(f"{k}={v}" for k, v in trial.params.items())
            lines.append(f"| {trial.number} | {objective} | " + " | ".join(cells) + f" | {params} |")
        if gains:
            lines += ["", "Gains in points against the untrained model, with Newcombe's interval for two "
                      "independent proportions (conservative: both were scored on the same items)."]
        if figures:
            lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | os.PathLike, figures: bool = True) -> dict[str, Path]:
        """Write ``sweep_analysis.{json,md}`` and (``figures``) PNGs under ``out_dir``, each atomically."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        if figures:
            from spelltransfer.analyse.sweep_figures import plot_analysis

            written |= plot_analysis(self, out_dir / "figures")
        names = [str(path.relative_to(out_dir)) for path in written.values()]
        written["json"] = write_text_atomic(out_dir / "sweep_analysis.json", json.dumps(self.to_dict(), indent=2) + "\n")
        written["markdown"] = write_text_atomic(out_dir / "sweep_analysis.md", self.markdown(names))
        return written


def load_trials(path: str | os.PathLike) -> tuple[list[TrialResult], dict[str, int], list[str]]:
    """Completed trials with at least one accuracy, the count of the others by state, and the parameter names."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"trials file {path} does not exist (a sweep writes results/metrics/<name>/trials.csv)")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for needed in ("number", "state"):
            if needed not in columns:
                raise DataError(f"{path}: column '{needed}' is missing (is this a sweep's trials.csv?)")
        if not any(f"{t}_accuracy" in columns for t in TASKS):
            raise DataError(f"{path}: no accuracy column ({', '.join(f'{t}_accuracy' for t in TASKS)})")
        params = [c for c in columns if c not in RESERVED]
        trials, excluded = [], {}
        for line, row in enumerate(reader, start=2):
            accuracy = {t: _number(row, f"{t}_accuracy", path, line) for t in TASKS}
            accuracy = {t: v for t, v in accuracy.items() if v is not None}
            if row["state"] != "COMPLETE" or not accuracy:
                state = row["state"] if row["state"] != "COMPLETE" else "COMPLETE without accuracies"
                excluded[state] = excluded.get(state, 0) + 1
                continue
            n = {t: int(v) for t in TASKS if (v := _number(row, f"{t}_n", path, line)) is not None}
            trials.append(TrialResult(number=int(row["number"]), params={p: row[p] for p in params},
                                      accuracy=accuracy, n=n, objective=_number(row, "objective", path, line)))
    return trials, excluded, params


def baseline_from_eval(result) -> dict[str, dict]:
    """Task -> accuracy, n and source from an ``EvalResult`` of the untrained model."""
    label = result.model + (f" ({result.split})" if result.split else "")
    return {task: {"accuracy": m.accuracy, "n": m.n, "source": label} for task, m in result.tasks.items() if task in TASKS}


def analyse_sweep(path: str | os.PathLike, baseline: dict[str, dict] | None = None,
                  config: SweepAnalysisConfig | None = None) -> SweepAnalysis:
    """Read ``path`` (a sweep's trials.csv) into a ``SweepAnalysis``."""
    from scipy.stats import false_discovery_control

    config = config or SweepAnalysisConfig()
    trials, excluded, params = load_trials(path)
    if not trials:
        raise DataError(f"{path}: no completed trial with accuracies yet (left out: {excluded or 'none'})")

    def correlate(param: str, task: str, xs: list[float], ys: list[float]) -> ParamEffect:
        if len(xs) < config.min_trials or len(set(xs)) < 2 or len(set(ys)) < 2:
            return ParamEffect(param, task, len(xs), None, None)
        rho, p = spearman_permutation(xs, ys, config.permutations)
        return ParamEffect(param, task, len(xs), rho, p)

    effects, levels = [], {}
    for param in params:
        values = [t.params[param] for t in trials]
        as_numbers = [numeric(v) for v in values]
        for task in TASKS:
            pairs = [(x, t.accuracy[task]) for x, t in zip(as_numbers, trials) if task in t.accuracy and x is not None]
            if any(x is None for x in as_numbers) or not pairs:
                effects.append(ParamEffect(param, task, len(pairs), None, None))
            else:
                effects.append(correlate(param, task, [x for x, _ in pairs], [y for _, y in pairs]))
        distinct = sorted(set(values), key=lambda v: (numeric(v) is None, numeric(v) or 0.0, v))
        if 1 < len(distinct) <= config.max_levels:
            levels[param] = [_level(value, [t for t in trials if t.params[param] == value]) for value in distinct]
    tested = [i for i, e in enumerate(effects) if e.p is not None]
    if tested:
        adjusted = false_discovery_control([effects[i].p for i in tested], method="bh")
        for i, p_adj in zip(tested, adjusted):
            effects[i] = ParamEffect(**(asdict(effects[i]) | {"p_adjusted": float(p_adj)}))

    spelling_vs = {}
    for task in TRANSFER_TASKS:
        both = [t for t in trials if "spelling" in t.accuracy and task in t.accuracy]
        spelling_vs[task] = correlate("spelling_accuracy", task, [t.accuracy["spelling"] for t in both],
                                      [t.accuracy[task] for t in both])

    ranked = sorted(trials, key=lambda t: (t.objective is None, -(t.objective or 0.0), t.number))
    top = [_top_trial(t, baseline) for t in ranked[:config.top]]
    return SweepAnalysis(source=str(path), trials=len(trials), excluded=excluded, params=params, effects=effects,
                             levels=levels, spelling_vs_transfer=spelling_vs, top=top, baseline=baseline, config=config,
                             rows=trials)


def spearman_permutation(xs: list[float], ys: list[float], permutations: int = 9999) -> tuple[float, float]:
    """Spearman's rho and its two-sided permutation p-value.

    Why a permutation test: sweeps have few trials and many ties (grid values), where the usual
    t approximation is wrong — 4 trials in perfect rank order get p = 0 from it; the exact
    permutation p is 1/3 with two ties per side. Exact when n! <= ``permutations``, else Monte Carlo
    with a fixed seed (so a report is reproducible).
    """
    import numpy as np
    from scipy.stats import permutation_test, rankdata

    rx, ry = rankdata(xs), rankdata(ys)
    ry_centred = ry - ry.mean()
    y_norm = float(np.sqrt((ry_centred ** 2).sum()))

    def rho(x, axis=-1):
        xc = x - x.mean(axis=axis, keepdims=True)
        return (xc * ry_centred).sum(axis=axis) / (np.sqrt((xc ** 2).sum(axis=axis)) * y_norm)

    result = permutation_test((rx,), rho, permutation_type="pairings", n_resamples=permutations,
                              alternative="two-sided", vectorized=True, rng=0)
    return float(result.statistic), float(min(1.0, result.pvalue))


def _level(value: str, trials: list[TrialResult]) -> Level:
    mean, low, high = {}, {}, {}
    for task in TASKS:
        accs = [t.accuracy[task] for t in trials if task in t.accuracy]
        if accs:
            mean[task], low[task], high[task] = sum(accs) / len(accs), min(accs), max(accs)
    return Level(value, len(trials), mean, low, high)


def _top_trial(trial: TrialResult, baseline: dict[str, dict] | None) -> TopTrial:
    ci, gain, gain_ci = {}, {}, {}
    for task, accuracy in trial.accuracy.items():
        n = trial.n.get(task)
        ci[task] = wilson_interval(round(accuracy * n), n) if n else None
        if baseline and task in baseline and n:
            base = baseline[task]
            gain[task] = accuracy - base["accuracy"]
            gain_ci[task] = newcombe_interval(round(accuracy * n), n, round(base["accuracy"] * base["n"]), base["n"])
    return TopTrial(trial.number, trial.params, trial.objective, trial.accuracy, ci, gain, gain_ci)


def _effect_cell(effect: ParamEffect | None, alpha: float) -> str:
    if effect is None or effect.rho is None:
        return "–"
    p = effect.p_adjusted if effect.p_adjusted is not None else effect.p
    mark = "**" if p is not None and p < alpha else ""
    return f"{mark}rho {effect.rho:+.2f}{mark} (p {p:.2g}, {effect.trials} trials)"


def _number(row: dict, column: str, path: Path, line: int) -> float | None:
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path} line {line}: column '{column}' is not a number: {text!r}") from None
    if not math.isfinite(value):
        return None
    return value


def numeric(text: str) -> float | None:
    """``text`` as a finite float, or None (a categorical value)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _pct(value: float) -> str:
    return f"{value * 100:.1f} %"
