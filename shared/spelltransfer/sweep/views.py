"""What the controller shows of a sweep and its trials: Optuna's trial joined with its dispatch rows.

``SweepView``/``TrialView`` are what the gRPC service serialises, trials.csv is written from and
MLflow/W&B log; they are built here only, from a ``FrozenTrial`` and the controller's store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import optuna

from spelltransfer.sweep.store import DispatchRow


@dataclass(frozen=True)
class TrialView:
    number: int
    state: str
    params: dict[str, str]
    attempts: int
    worker: str
    worker_trial_id: str
    objective: float | None
    metrics: dict[str, float]
    steps: int
    stop_reason: str
    error: str
    duration_s: float
    train_run_id: str = ""  # the trainer's MLflow run (holds the adapter)
    wandb_run_id: str = ""


@dataclass(frozen=True)
class SweepView:
    name: str
    state: str
    objective: str
    max_trials: int
    trials: list[TrialView]
    best_number: int
    best_value: float
    trials_csv: str
    mlflow_run_id: str
    error: str
    created_at: float
    finished_at: float


def trial_view(frozen: optuna.trial.FrozenTrial, dispatches: list[DispatchRow]) -> TrialView:
    """One trial as shown; ``dispatches``: its attempts, oldest first (the last one fills what Optuna lacks)."""
    attrs = frozen.user_attrs
    last = dispatches[-1] if dispatches else None
    complete = frozen.state == optuna.trial.TrialState.COMPLETE
    state = frozen.state.name
    if state == "RUNNING" and last is not None and last.state == "QUEUED":
        state = "WAITING"
    end = frozen.datetime_complete.timestamp() if frozen.datetime_complete else time.time()
    start = frozen.datetime_start.timestamp() if frozen.datetime_start else end
    return TrialView(
        number=frozen.number, state=state, params={k: _format(v) for k, v in frozen.params.items()},
        attempts=int(attrs.get("attempts", last.attempt if last else 0)),
        worker=str(attrs.get("worker", last.worker if last else "")),
        worker_trial_id=str(attrs.get("worker_trial_id", last.worker_trial_id if last else "")),
        objective=frozen.value if complete else None,
        metrics=dict(attrs.get("metrics", {})), steps=int(attrs.get("steps", 0)),
        stop_reason=str(attrs.get("stop_reason", "")),
        train_run_id=str(attrs.get("train_run_id", "")), wandb_run_id=str(attrs.get("wandb_run_id", "")),
        error=str(attrs.get("error", last.error if last and not complete else "")),
        duration_s=max(0.0, end - start))


def no_success_error(trials: list[optuna.trial.FrozenTrial]) -> str:
    """Why a finished sweep has no successful trial: counts per state and the first trial's error."""
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    failed = next((t for t in trials if t.user_attrs.get("error")), None)
    reason = f"; trial {failed.number}: {str(failed.user_attrs['error'])[:500]}" if failed is not None else ""
    return f"no trial succeeded ({summary}){reason}"[:2000]


def _format(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)
