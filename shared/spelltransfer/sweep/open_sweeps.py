"""What the controller's parts share: the store, the open sweeps (spec, study, events) and one
condition that wakes the scheduler and watchers when something changed."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import optuna

from spelltransfer.platform.errors import NotFoundError
from spelltransfer.sweep import results
from spelltransfer.sweep.spec import SweepSpec, parse_spec
from spelltransfer.sweep.store import ControllerStore
from spelltransfer.sweep.study import SweepStudy
from spelltransfer.sweep.views import SweepView, trial_view

log = logging.getLogger(__name__)


@dataclass
class OpenSweep:
    spec: SweepSpec
    trials: SweepStudy
    events: list[tuple[str, int, str]] = field(default_factory=list)  # (kind, trial number or -1, message)

    @property
    def study(self) -> optuna.Study:
        return self.trials.study


class OpenSweeps:
    """Sweeps by name, opened from the store on first use (a restarted controller reopens them)."""

    def __init__(self, store: ControllerStore):
        self.store = store
        self.stopping = threading.Event()
        self._optuna = threading.RLock()  # one Optuna call at a time (SQLite storage)
        self._lock = threading.RLock()
        self._sweeps: dict[str, OpenSweep] = {}
        self._changed = threading.Condition()

    def add(self, spec: SweepSpec, url: str) -> OpenSweep:
        with self._lock:
            self._sweeps[spec.name] = OpenSweep(spec, SweepStudy(spec, url, self._optuna))
            return self._sweeps[spec.name]

    def open(self, name: str) -> OpenSweep:
        with self._lock:
            if name in self._sweeps:
                return self._sweeps[name]
            row = self.store.sweep(name)
            if row is None:
                raise NotFoundError(f"name: no sweep {name!r}")
            spec = parse_spec(row.spec_yaml, f"stored spec of {name}")
            return self.add(spec, row.storage_url)

    def view(self, name: str) -> SweepView:
        row = self.store.sweep(name)
        if row is None:
            raise NotFoundError(f"name: no sweep {name!r}")
        sweep = self.open(name)
        frozen = sweep.trials.trials()
        dispatches = self.store.dispatches(name)
        trials = [trial_view(t, [d for d in dispatches if d.number == t.number]) for t in frozen]
        complete = [t for t in trials if t.state == "COMPLETE" and t.objective is not None]
        best = max(complete, key=lambda t: t.objective, default=None)
        return SweepView(
            name=name, state=row.state, objective=sweep.spec.objective, max_trials=sweep.spec.trial_count(),
            trials=trials, best_number=best.number if best else -1, best_value=best.objective if best else 0.0,
            trials_csv=str(results.trials_csv_path(sweep.spec.results_dir, name)), mlflow_run_id=row.mlflow_run_id,
            error=row.error, created_at=row.created_at, finished_at=row.finished_at)

    def event(self, name: str, kind: str, number: int, message: str) -> None:
        log.info("sweep %s: %s %s %s", name, kind, number if number >= 0 else "", message)
        try:
            self.open(name).events.append((kind, number, message))
        except NotFoundError:
            return
        self.notify()

    def notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Until the next change (or ``timeout`` seconds)."""
        with self._changed:
            self._changed.wait(timeout=timeout)
