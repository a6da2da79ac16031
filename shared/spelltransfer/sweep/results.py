"""Where a sweep's trials end up: ``results/metrics/<sweep>/trials.csv`` and MLflow.

MLflow gets one parent run per sweep (spec, best value) and one child run per finished trial
(params, the three validation accuracies, objective, steps, stop reason), linked by the
``mlflow.parentRunId`` tag so the UI nests them. The client API is used (no global active run),
because trials finish on different controller threads.
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from spelltransfer.atomic import write_text_atomic

if TYPE_CHECKING:
    from spelltransfer.sweep.views import SweepView, TrialView

ACCURACY_COLUMNS = ("spelling_accuracy", "position_accuracy", "count_accuracy")
ITEM_COUNT_COLUMNS = ("spelling_n", "position_n", "count_n")  # validation items behind each accuracy


def trials_csv_path(results_dir: str, sweep: str) -> Path:
    return Path(results_dir) / "metrics" / sweep / "trials.csv"


def write_trials_csv(path: Path, view: "SweepView") -> None:
    """One row per trial (params, accuracies, objective, steps, stop reason), written atomically."""
    param_names = sorted({name for trial in view.trials for name in trial.params})
    columns = ["number", "state", "attempts", "worker", *param_names, *ACCURACY_COLUMNS, *ITEM_COUNT_COLUMNS, "objective", "steps",
               "stop_reason", "duration_s", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for trial in view.trials:
        row = {"number": trial.number, "state": trial.state, "attempts": trial.attempts, "worker": trial.worker,
               "objective": "" if trial.objective is None else f"{trial.objective:.6g}", "steps": trial.steps,
               "stop_reason": trial.stop_reason, "duration_s": f"{trial.duration_s:.1f}", "error": trial.error}
        row.update(trial.params)
        for column in ACCURACY_COLUMNS:
            value = trial.metrics.get(column)
            row[column] = "" if value is None else f"{value:.6g}"
        for column in ITEM_COUNT_COLUMNS:
            value = trial.metrics.get(column)
            row[column] = "" if value is None else int(value)
        writer.writerow(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, buffer.getvalue(), fsync=False)


def resolve_tracking_uri(configured: str | None) -> str:
    from spelltransfer.track.config import DEFAULT_MLFLOW_URI

    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI


def _mlflow_entities():
    from mlflow.entities import Metric, Param

    return Metric, Param


class SweepTracker:
    """MLflow parent run per sweep, child run per trial."""

    def __init__(self, tracking_uri: str | None, experiment: str):
        from mlflow.tracking import MlflowClient

        uri = resolve_tracking_uri(tracking_uri)
        artifacts = None
        if uri.startswith("sqlite:///"):
            # Keep artifacts beside the database rather than in ./mlruns of whatever the cwd is.
            db_dir = Path(uri.removeprefix("sqlite:///")).resolve().parent
            db_dir.mkdir(parents=True, exist_ok=True)
            artifacts = (db_dir / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        existing = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (existing.experiment_id if existing
                              else self.client.create_experiment(experiment, artifact_location=artifacts))

    def start_sweep(self, name: str, spec_yaml: str, params: dict[str, str], key: str = "") -> str:
        """The sweep's parent run. ``key`` names this submission of the sweep: a controller killed
        after creating the run and before recording its id finds and finishes that run on restart
        rather than opening a second parent."""
        run = None
        if key:
            found = self.client.search_runs([self.experiment_id], f"tags.`spelltransfer.sweep_key` = '{key}'",
                                            max_results=1)
            run = found[0] if found else None
        if run is None:
            tags = {"spelltransfer.sweep": name} | ({"spelltransfer.sweep_key": key} if key else {})
            run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        for param, value in params.items():
            self.client.log_param(run.info.run_id, param, value[:6000])
        self.client.log_text(run.info.run_id, spec_yaml, "sweep.yaml")
        return run.info.run_id

    def log_trial(self, parent_run_id: str, sweep: str, trial: "TrialView", run_id: str | None = None) -> str:
        """One child run per trial. ``run_id`` completes a child run that a crash left half-written
        (created, then killed before its metrics or its end were logged) instead of adding a second one.
        The run is terminated last, so a terminated child run is a complete one."""
        from spelltransfer.registry.model_registry import TRAIN_RUN_TAG

        tags = {"mlflow.parentRunId": parent_run_id, "spelltransfer.sweep": sweep, "trial.number": str(trial.number),
                "trial.state": trial.state, "trial.stop_reason": trial.stop_reason, "trial.worker": trial.worker}
        if trial.train_run_id:  # the trainer's own run, which holds the adapter (the registry follows this tag)
            tags[TRAIN_RUN_TAG] = trial.train_run_id
        if trial.wandb_run_id:
            tags["spelltransfer.wandb_run_id"] = trial.wandb_run_id
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, run_name=f"{sweep}-trial-{trial.number}",
                                            tags=tags).info.run_id
        metrics = {k: v for k, v in trial.metrics.items() if k in ACCURACY_COLUMNS + ITEM_COUNT_COLUMNS}
        if trial.objective is not None:
            metrics["objective"] = trial.objective
        metrics.update(steps=float(trial.steps), attempts=float(trial.attempts), duration_s=trial.duration_s)
        Metric, Param = _mlflow_entities()
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                              params=[Param(k, str(v)) for k, v in trial.params.items()])
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(trial.state, "FAILED")
        self.client.set_terminated(run_id, status=status)
        return run_id

    def logged_trials(self, parent_run_id: str) -> dict[int, tuple[str, bool]]:
        """Trial number → (child run id, complete) for the child runs under ``parent_run_id``;
        a child run still RUNNING was cut off by a crash before its end was logged."""
        runs = self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                       max_results=10000)
        return {int(run.data.tags["trial.number"]): (run.info.run_id, run.info.status != "RUNNING")
                for run in runs if "trial.number" in run.data.tags}

    def sync_trials(self, parent_run_id: str, sweep: str, trials: "list[TrialView]") -> list[int]:
        """Log a complete child run for every finished trial that lacks one: the controller may have
        died between telling Optuna and logging, or between creating a child run and ending it.
        Returns the trial numbers it logged."""
        logged = self.logged_trials(parent_run_id)
        repaired = []
        for trial in trials:
            if trial.state not in ("COMPLETE", "PRUNED", "FAIL"):
                continue
            run_id, complete = logged.get(trial.number, (None, False))
            if not complete:
                self.log_trial(parent_run_id, sweep, trial, run_id=run_id)
                repaired.append(trial.number)
        return repaired

    def finish_sweep(self, run_id: str, view: "SweepView", csv_path: Path | None,
                     analysis_dir: Path | None = None) -> None:
        if view.best_number >= 0:
            self.client.log_metric(run_id, "best_value", view.best_value)
            self.client.set_tag(run_id, "best_trial", str(view.best_number))
        self.client.log_metric(run_id, "trials", float(len(view.trials)))
        if csv_path is not None and csv_path.exists():
            self.client.log_artifact(run_id, str(csv_path))
        if analysis_dir is not None and analysis_dir.is_dir():  # the report and its figures, side by side
            self.client.log_artifacts(run_id, str(analysis_dir), "analysis")
        self.client.set_terminated(run_id, status="FINISHED" if view.state == "COMPLETED" else "KILLED")
