"""The Optuna side of a sweep: storage, sampler, pruner and the objective read from metrics.

Storage is RDB: SQLite by default (one file beside the controller's state), any SQLAlchemy URL
(PostgreSQL) when controllers and users spread over hosts. The study is loaded if it exists, so
a restarted controller continues the same study. ``SweepStudy`` is how the controller talks to it:
public Optuna API only, trials named by number.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import optuna

from spelltransfer.run_folder import accuracy_task, item_count_task
from spelltransfer.sweep.design import enqueue_design
from spelltransfer.sweep.spec import SweepSpec

TASKS = ("spelling", "position", "count")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def storage_url(spec: SweepSpec, state_dir: Path) -> str:
    return spec.storage or f"sqlite:///{(state_dir / 'optuna.db').resolve()}"


def make_storage(url: str) -> optuna.storages.RDBStorage:
    # SQLite: wait for the file lock instead of failing when two threads write at once.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell: its ``after_trial`` calls ``study.stop()``, which raises outside
    ``optimize``; the controller stops at the grid size itself (``SweepSpec.trial_count``)."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(spec: SweepSpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    seed = spec.seed + seed_offset
    if spec.strategy == "grid":
        return _AskTellGridSampler(spec.grid(), seed=seed)
    if spec.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    pruner = spec.pruner
    if pruner.kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=pruner.min_resource,
                                                      reduction_factor=pruner.reduction_factor)
    if pruner.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=pruner.min_resource, max_resource=pruner.max_resource,
                                              reduction_factor=pruner.reduction_factor)
    return optuna.pruners.NopPruner()


def open_study(spec: SweepSpec, url: str | optuna.storages.BaseStorage) -> optuna.Study:
    storage = make_storage(url) if isinstance(url, str) else url
    study = optuna.create_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec),
                                pruner=make_pruner(spec), direction="maximize", load_if_exists=True)
    existing = len(study.get_trials(deepcopy=False))
    if not existing:
        enqueue_design(study, spec)  # a new study with a balanced design: its first trials (WAITING)
    else:
        # A reopened study (controller restart) must not replay the seeded sampler from the start,
        # or it would propose the first trials' parameters again; offset the seed by what was asked.
        study.sampler = make_sampler(spec, seed_offset=existing)
    return study


class SweepStudy:
    """One sweep's study, one Optuna call at a time (``lock``: shared by every study of a controller,
    whose SQLite storage takes one writer). A trial is named by its number; the storage's trial id
    comes from the storage we opened (``get_trial_id_from_study_id_trial_number``), and a running
    trial is reopened with ``optuna.trial.Trial(study, trial_id)`` to report to it or set attributes.
    """

    def __init__(self, spec: SweepSpec, url: str, lock: threading.RLock):
        self.spec = spec
        self._lock = lock
        self._storage = make_storage(url)
        with lock:
            self.study = open_study(spec, self._storage)
            self._study_id = self._storage.get_study_id_from_name(spec.name)

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        with self._lock:
            return self.study.get_trials(deepcopy=False)

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` (what the dispatch rows record)."""
        with self._lock:
            return self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def ask(self) -> tuple[int, dict[str, Any]]:
        """A new trial: its number and its parameters."""
        with self._lock:
            trial = self.study.ask()
            return trial.number, suggest(trial, self.spec)

    def params(self, number: int) -> dict[str, Any]:
        """The parameters of a trial asked before (suggesting again returns what was drawn)."""
        with self._lock:
            return suggest(self._trial(number), self.spec)

    def report(self, number: int, value: float, step: int) -> bool | None:
        """Report an intermediate value; whether the pruner stops the trial, None if it has finished."""
        with self._lock:
            if self._finished(number):
                return None
            trial = self._trial(number)
            trial.report(value, step)
            return trial.should_prune()

    def tell(self, number: int, state: optuna.trial.TrialState, value: float | None = None,
             attrs: dict | None = None) -> bool:
        """Record the trial's end (user attributes first); False if it had ended already."""
        with self._lock:
            if self._finished(number):
                return False
            trial = self._trial(number)
            for key, item in (attrs or {}).items():
                trial.set_user_attr(key, item)
            self.study.tell(number, value if state == optuna.trial.TrialState.COMPLETE else None, state=state,
                            skip_if_finished=True)
        return True

    def _trial(self, number: int) -> optuna.trial.Trial:
        return optuna.trial.Trial(self.study, self.trial_id(number))

    def _finished(self, number: int) -> bool:
        return self._storage.get_trial(self.trial_id(number)).state in FINISHED


def suggest(trial: optuna.trial.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Draw every parameter of ``spec`` for ``trial``."""
    params: dict[str, Any] = {}
    for name, p in spec.parameters.items():
        if p.kind == "categorical":
            params[name] = trial.suggest_categorical(name, p.values)
        elif p.kind == "int":
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return params


def task_accuracies(metrics: dict[str, float]) -> dict[str, float]:
    """Per-task validation accuracy from flattened metrics, whatever the nesting.

    Accepts every spelling ``accuracy_task`` knows (``best.accuracy_spelling``,
    ``validation.tasks.spelling.accuracy`` ...); the full validation evaluation (``validation.``,
    written by the worker) wins over the trainer's ``best``, then ``final``, then the rest.
    """
    found: dict[str, tuple[int, float]] = {}
    for key, value in metrics.items():
        task = accuracy_task(key)
        if task is None:
            continue
        lowered = key.lower()
        rank = (3 if lowered.startswith("validation.") else 2 if lowered.startswith("best")
                else 1 if lowered.startswith("final") else 0)
        if task not in found or rank > found[task][0]:
            found[task] = (rank, value)
    return {task: value for task, (_, value) in found.items()}


def task_item_counts(metrics: dict[str, float]) -> dict[str, int]:
    """Per-task number of validation items the accuracies were measured on (for their intervals)."""
    return {task: int(value) for key, value in metrics.items() if (task := item_count_task(key)) is not None}


def objective_value(objective: str, metrics: dict[str, float]) -> float | None:
    """The sweep objective from metrics, or None when the needed accuracies are missing."""
    accuracies = task_accuracies(metrics)
    if objective == "mean_transfer":
        parts = [accuracies.get("position"), accuracies.get("count")]
        if any(part is None for part in parts):
            return None
        value = sum(parts) / 2
    else:
        value = accuracies.get(objective)
    return None if value is None or not math.isfinite(value) else float(value)


def intermediate_value(metric: str, objective: str, eval_metrics: dict[str, float]) -> float | None:
    """What an ``eval`` event reports to the pruner (larger is better), or None if it lacks it."""
    if metric == "eval_loss":
        value = eval_metrics.get("eval_loss")
        return None if value is None or not math.isfinite(value) else -float(value)
    if metric == "accuracy":
        value = eval_metrics.get("accuracy")
        return None if value is None or not math.isfinite(value) else float(value)
    return objective_value(objective, eval_metrics)
