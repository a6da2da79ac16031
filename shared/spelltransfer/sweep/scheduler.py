"""Placing a sweep's trials on workers: one thread for all running sweeps.

- **ask** only when a worker slot is free (``slots`` per worker, so a worker may take K trials);
  the trial's params are checked against the training config first — a combination the config
  rejects is told FAIL at once and never dispatched;
- **dispatch**: a row (worker, deterministic worker-side id ``<sweep>-<number>-a<attempt>``) is
  written before the follower calls ``StartTrial`` — so after a controller crash ``recover``
  re-attaches to the same run and no trial runs twice;
- **complete**: when every trial has finished, the sweep is COMPLETED (or FAILED, none succeeded)
  after its champion, analysis and W&B run are written.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import optuna

from spelltransfer.errors import ConfigError
from spelltransfer.platform.roots import ServiceRoots
from spelltransfer.sweep.admission import check_trial
from spelltransfer.sweep.follower import TrialFollower
from spelltransfer.sweep.open_sweeps import OpenSweep, OpenSweeps
from spelltransfer.sweep.reporting import SweepReporter
from spelltransfer.sweep.spec import trial_overrides
from spelltransfer.sweep.store import ACTIVE_DISPATCH
from spelltransfer.sweep.study import FINISHED
from spelltransfer.sweep.views import no_success_error
from spelltransfer.sweep.workers import PLACED, WorkerPool

log = logging.getLogger(__name__)

_State = optuna.trial.TrialState


class TrialScheduler:
    def __init__(self, sweeps: OpenSweeps, workers: WorkerPool, follower: TrialFollower, reporter: SweepReporter,
                 roots: ServiceRoots, poll_s: float):
        self.sweeps = sweeps
        self.store = sweeps.store
        self.workers = workers
        self.follower = follower
        self.reporter = reporter
        self.roots = roots
        self._poll_s = poll_s
        self._thread = threading.Thread(target=self._schedule_forever, name="sweep-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 10) -> None:
        self._thread.join(timeout=timeout)

    def _schedule_forever(self) -> None:
        while not self.sweeps.stopping.is_set():
            try:
                for row in self.store.sweeps("RUNNING"):
                    self.schedule(row.name)
            except Exception:
                log.exception("scheduler tick failed")
            self.sweeps.wait(self._poll_s)

    def schedule(self, name: str) -> None:
        """Fill free worker slots with the sweep's queued attempts, then with newly asked trials."""
        sweep = self.sweeps.open(name)
        spec = sweep.spec
        while not self.sweeps.stopping.is_set():
            active = self.store.dispatches(name, ACTIVE_DISPATCH)
            queued = [d for d in active if d.state == "QUEUED"]
            placed = len(active) - len(queued)
            if spec.parallelism is not None and placed >= spec.parallelism:
                break
            worker = self.workers.free()
            if worker is None:
                break
            if queued:
                self.follower.start(self.store.update_dispatch(queued[0], state="ASSIGNED", worker=worker))
                continue
            # Enqueued trials (a design's, WAITING) are not asked yet: ask hands them out first.
            if sum(t.state != _State.WAITING for t in sweep.trials.trials()) >= spec.trial_count():
                break
            self._ask(name, sweep)
        self.reporter.ensure_parent_run(name)  # after dispatching: creating an MLflow store can take seconds
        self._maybe_complete(name)

    def _ask(self, name: str, sweep: OpenSweep) -> None:
        number, params = sweep.trials.ask()
        try:
            check_trial(sweep.spec, self.roots, params)
        except ConfigError as error:
            sweep.trials.tell(number, _State.FAIL, attrs={"error": str(error), "attempts": 0})
            self.sweeps.event(name, "trial_rejected", number, str(error))
            return
        self.store.add_dispatch(name, number, 1, sweep.trials.trial_id(number), trial_overrides(sweep.spec, params))
        self.sweeps.event(name, "trial_queued", number, json.dumps(params))

    def _maybe_complete(self, name: str) -> None:
        sweep = self.sweeps.open(name)
        if self.store.dispatches(name, ACTIVE_DISPATCH):
            return
        trials = sweep.trials.trials()
        if len(trials) < sweep.spec.trial_count() or any(t.state not in FINISHED for t in trials):
            return
        # A sweep none of whose trials succeeded has no result: FAILED, with the trials' reasons.
        succeeded = [t for t in trials if t.state == _State.COMPLETE]
        state, error = ("COMPLETED", "") if succeeded else ("FAILED", no_success_error(trials))
        analysis_dir = self.reporter.conclude(name, state)
        self.store.update_sweep(name, state=state, finished_at=time.time(), error=error)
        self.sweeps.event(name, "sweep_finished", -1, state if not error else f"{state}: {error}")
        self.reporter.close(name, concluded=True, analysis_dir=analysis_dir)

    def recover(self) -> None:
        """Re-attach to every attempt that was placed, and queue trials asked but never recorded."""
        for row in self.store.sweeps("RUNNING"):
            sweep = self.sweeps.open(row.name)
            trials = sweep.trials.trials()
            recorded = {d.number for d in self.store.dispatches(row.name)}
            for frozen in trials:
                if frozen.state == _State.RUNNING and frozen.number not in recorded:
                    params = sweep.trials.params(frozen.number)
                    self.store.add_dispatch(row.name, frozen.number, 1, sweep.trials.trial_id(frozen.number),
                                            trial_overrides(sweep.spec, params))
            active = {d.number for d in self.store.dispatches(row.name, ACTIVE_DISPATCH)}
            for frozen in trials:
                if frozen.state == _State.RUNNING and frozen.number in recorded and frozen.number not in active:
                    # Every attempt closed but Optuna never told: count it failed rather than risk a rerun.
                    sweep.trials.tell(frozen.number, _State.FAIL,
                                      attrs={"error": "controller stopped between finishing and recording this trial"})
            for dispatch in self.store.dispatches(row.name, PLACED):
                self.follower.start(dispatch)
            self.sweeps.event(row.name, "controller_restarted", -1, "re-attached to running trials")
