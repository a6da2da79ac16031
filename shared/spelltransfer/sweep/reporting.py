"""What a sweep leaves behind: trials.csv, the MLflow parent and child runs, the W&B summary run,
the analysis (``spelltransfer analyse sweep``) and the champion in the model registry.

None of it can fail a sweep: a failure is logged, and becomes an event where a user should see it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

from spelltransfer.sweep import results
from spelltransfer.sweep.open_sweeps import OpenSweeps
from spelltransfer.sweep.views import SweepView, TrialView

log = logging.getLogger(__name__)


class SweepReporter:
    def __init__(self, sweeps: OpenSweeps):
        self.sweeps = sweeps
        self._lock = threading.Lock()
        self._trackers: dict[str, results.SweepTracker] = {}

    # ---------------------------------------------------------------- while the sweep runs

    def ensure_parent_run(self, name: str) -> None:
        row = self.sweeps.store.sweep(name)
        if row.mlflow_run_id:
            return
        try:
            tracker = self._tracker(name)
            if tracker is None:
                return
            spec = self.sweeps.open(name).spec
            params = {"objective": spec.objective, "strategy": spec.strategy, "max_trials": str(spec.max_trials),
                      "pruner": spec.pruner.kind, "base_config": spec.base_config}
            run_id = tracker.start_sweep(name, row.spec_yaml, params, key=f"{name}@{row.created_at!r}")
            self.sweeps.store.update_sweep(name, mlflow_run_id=run_id)
        except Exception:
            log.exception("MLflow parent run for %s failed (the sweep goes on)", name)

    def trial_finished(self, view: SweepView, trial: TrialView) -> None:
        """Rewrite trials.csv and log the trial's MLflow child run."""
        self.write_csv(view)
        if not view.mlflow_run_id:
            return
        try:
            tracker = self._tracker(view.name)
            if tracker is not None:
                tracker.log_trial(view.mlflow_run_id, view.name, trial)
        except Exception:
            log.exception("MLflow child run for %s trial %d failed", view.name, trial.number)

    def write_csv(self, view: SweepView) -> None:
        try:
            results.write_trials_csv(Path(view.trials_csv), view)
        except OSError:
            log.exception("writing %s failed", view.trials_csv)

    # ---------------------------------------------------------------- at the end

    def conclude(self, name: str, state: str) -> Path | None:
        """Before the final ``state`` is stored (a watcher may stop the platform right after it):
        register the champion, analyse, log the W&B summary run. The analysis directory, if any."""
        self._register_champion(name)
        analysis_dir = self._analyse(self.sweeps.view(name))
        self._log_wandb(name, analysis_dir, state=state)
        return analysis_dir

    def close(self, name: str, concluded: bool = False, analysis_dir: Path | None = None) -> None:
        """After the final state: close the MLflow parent run (logging any missing child run). A sweep
        not ``concluded`` (cancelled) is analysed first: what ran is still worth reading."""
        view = self.sweeps.view(name)
        if not concluded:
            analysis_dir = self._analyse(view)
            self._log_wandb(name, analysis_dir)
        if view.mlflow_run_id:
            try:
                tracker = self._tracker(name)
                if tracker is not None:
                    self._sync_child_runs(view)
                    tracker.finish_sweep(view.mlflow_run_id, view, Path(view.trials_csv), analysis_dir)
            except Exception:
                log.exception("MLflow parent run for %s could not be closed", name)

    # ---------------------------------------------------------------- helpers

    def _tracker(self, name: str) -> results.SweepTracker | None:
        spec = self.sweeps.open(name).spec
        if not spec.mlflow.enabled:
            return None
        with self._lock:
            if name not in self._trackers:
                self._trackers[name] = results.SweepTracker(spec.mlflow.tracking_uri, spec.mlflow.experiment or "sweeps")
            return self._trackers[name]

    def _sync_child_runs(self, view: SweepView) -> None:
        """Log a child run for every finished trial that has none (the controller may have died
        between telling Optuna and logging to MLflow)."""
        tracker = self._tracker(view.name)
        if tracker is None or not view.mlflow_run_id:
            return
        tracker.sync_trials(view.mlflow_run_id, view.name, view.trials)

    def _log_wandb(self, name: str, analysis_dir: Path | None, state: str | None = None) -> None:
        """``wandb.enabled``: the sweep's summary run (trials table, analysis, figures); never fails the sweep."""
        spec = self.sweeps.open(name).spec
        if not spec.wandb.enabled:
            return
        view = self.sweeps.view(name)
        if state is not None:  # logged just before the state is stored
            view = replace(view, state=state)
        try:
            from spelltransfer.sweep.wandb_report import log_sweep_run

            run_id = log_sweep_run(spec, view, analysis_dir)
        except Exception as error:
            log.exception("the W&B summary run of %s failed", name)
            self.sweeps.event(name, "wandb_failed", -1, f"W&B: {error}"[:500])
            return
        self.sweeps.event(name, "wandb_logged", -1, run_id)
        if view.mlflow_run_id:
            try:
                tracker = self._tracker(name)
                if tracker is not None:
                    tracker.client.set_tag(view.mlflow_run_id, "spelltransfer.wandb_run_id", run_id)
            except Exception:
                log.exception("tagging the MLflow parent run of %s with its W&B run failed", name)

    def _analyse(self, view: SweepView) -> Path | None:
        """Write the final trials.csv, then ``spelltransfer analyse sweep`` on it, beside its results
        (RESULTS_DIR/analysis/NAME); None when no trial has accuracies. Never fails the sweep."""
        from spelltransfer.analyse.sweep import analyse_sweep
        from spelltransfer.errors import DataError

        trials_csv = Path(view.trials_csv)
        out = trials_csv.parent.parent.parent / "analysis" / view.name
        self.write_csv(view)
        try:
            analyse_sweep(trials_csv).save(out)
        except DataError as error:
            log.info("no analysis of %s: %s", view.name, error)
            return None
        except Exception:
            log.exception("the analysis of %s failed", view.name)
            return None
        self.sweeps.event(view.name, "sweep_analysed", -1, str(out / "sweep_analysis.md"))
        return out

    def _register_champion(self, name: str) -> None:
        """``registry.enabled``: the best trial's adapter becomes ``model_name@alias`` (the registry's
        own ``register_best_trial``, reading the child runs); a failure is an event, not a failed sweep."""
        spec = self.sweeps.open(name).spec
        view = self.sweeps.view(name)
        if not spec.registry.enabled or view.best_number < 0:
            return
        try:
            if not view.mlflow_run_id:
                raise RuntimeError("the sweep has no MLflow parent run (see the controller log)")
            self._sync_child_runs(view)
            from spelltransfer.registry.model_registry import register_best_trial

            registered = register_best_trial(
                results.resolve_tracking_uri(spec.mlflow.tracking_uri), view.mlflow_run_id, spec.registry.model_name,
                metric=spec.registry.metric, mode=spec.registry.mode, alias=spec.registry.alias)
            self.sweeps.event(name, "champion_registered", view.best_number,
                              f"{registered.name}@{spec.registry.alias} = version {registered.version} "
                              f"(run {registered.run_id}, {registered.metric}={registered.value:.4g})")
        except Exception as error:
            log.exception("registering the champion of %s failed", name)
            self.sweeps.event(name, "champion_failed", -1, f"registry: {error}"[:500])
