"""Following one attempt of a trial on its worker, one thread per attempt.

- **start**: ``StartTrial`` with the trial's resolved config (base config + overrides, validated
  here: workers need no copy of configs/) under the dispatch row's worker-side id (idempotent on
  the worker, so a restarted controller re-attaches instead of starting it twice); a full or
  unreachable worker puts the attempt back in the queue;
- **watch**: stream ``WatchTrial``; every ``eval`` event's objective is reported to Optuna and the
  pruner may cancel the trial; reconnect while the worker restarts (it resumes from its checkpoint);
- **finish**: success -> COMPLETE with the objective; failure -> a new attempt (up to
  ``max_retries``) on any worker, then FAIL; pruned -> PRUNED. Each finish rewrites trials.csv and
  logs an MLflow child run (``SweepReporter.trial_finished``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import grpc
import optuna

from spelltransfer.errors import ConfigError
from spelltransfer.platform.protos import trainer_pb2, trainer_pb2_grpc
from spelltransfer.sweep.open_sweeps import OpenSweep, OpenSweeps
from spelltransfer.sweep.reporting import SweepReporter
from spelltransfer.sweep.store import DispatchRow
from spelltransfer.sweep.study import intermediate_value, objective_value, task_accuracies, task_item_counts
from spelltransfer.sweep.workers import WorkerPool
from spelltransfer.train.config import load_training_config

log = logging.getLogger(__name__)

_T = trainer_pb2
_State = optuna.trial.TrialState
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
             grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


class TrialFollower:
    def __init__(self, sweeps: OpenSweeps, workers: WorkerPool, reporter: SweepReporter,
                 channel_factory: Callable[[str], grpc.Channel]):
        self.sweeps = sweeps
        self.store = sweeps.store
        self.workers = workers
        self.reporter = reporter
        self._channel_factory = channel_factory
        self._channels: dict[str, grpc.Channel] = {}
        self._threads: dict[tuple[str, int, int], threading.Thread] = {}
        self._lock = threading.RLock()

    def start(self, dispatch: DispatchRow) -> None:
        """Follow ``dispatch`` (ASSIGNED: start it first) unless a thread follows it already."""
        key = (dispatch.sweep, dispatch.number, dispatch.attempt)
        with self._lock:
            if key in self._threads and self._threads[key].is_alive():
                return
            thread = threading.Thread(target=self._follow_safely, args=(dispatch,), daemon=True,
                                      name=f"follow-{dispatch.worker_trial_id}")
            self._threads[key] = thread
        thread.start()

    def close(self, timeout: float = 10) -> None:
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout=timeout)
        for channel in self._channels.values():
            channel.close()

    def cancel_on_worker(self, dispatch: DispatchRow) -> None:
        try:
            trainer_pb2_grpc.TrainerServiceStub(self._channel(dispatch.worker)).CancelTrial(
                _T.TrialRef(trial_id=dispatch.worker_trial_id), timeout=10)
        except grpc.RpcError as error:
            log.warning("cancel %s on %s: %s", dispatch.worker_trial_id, dispatch.worker, error.code().name)

    # ---------------------------------------------------------------- one attempt

    def _follow_safely(self, dispatch: DispatchRow) -> None:
        try:
            self._follow(dispatch)
        except Exception as error:
            log.exception("following %s failed", dispatch.worker_trial_id)
            self.attempt_failed(self.store.dispatch(dispatch.sweep, dispatch.number, dispatch.attempt),
                                f"controller error: {error}")
        finally:
            self.sweeps.notify()

    def _follow(self, dispatch: DispatchRow) -> None:
        sweep = self.sweeps.open(dispatch.sweep)
        stub = trainer_pb2_grpc.TrainerServiceStub(self._channel(dispatch.worker))
        if dispatch.state == "ASSIGNED":
            dispatch = self._start_on_worker(stub, dispatch, sweep)
            if dispatch is None:
                return
        final = self._watch(stub, dispatch, sweep)
        if final is None:
            return
        dispatch = self.store.dispatch(dispatch.sweep, dispatch.number, dispatch.attempt)
        self.on_worker_finished(dispatch, sweep, final)

    def _start_on_worker(self, stub, dispatch: DispatchRow, sweep: OpenSweep) -> DispatchRow | None:
        """``StartTrial`` with the resolved config (the worker needs no copy of configs/); the RUNNING
        row, or None when it did not start (requeued or failed)."""
        try:
            config_yaml = load_training_config(sweep.spec.base_config, dispatch.overrides).to_yaml()
        except ConfigError as error:  # the base config changed on disk since the sweep was submitted
            self.store.update_dispatch(dispatch, state="FAILED", error=str(error)[:2000])
            self._finish_trial(dispatch, _State.FAIL, error=str(error))
            return None
        request = _T.StartTrialRequest(
            trial_id=dispatch.worker_trial_id, config_yaml=config_yaml,
            labels={"sweep": dispatch.sweep, "number": str(dispatch.number), "attempt": str(dispatch.attempt)},
            evaluate=sweep.spec.evaluate)
        try:
            stub.StartTrial(request, timeout=60)
        except grpc.RpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, *RETRYABLE):
                # Nothing started: put it back in the queue for any worker.
                self.workers.back_off(dispatch.worker)
                self.store.update_dispatch(dispatch, state="QUEUED", worker="")
            elif code == grpc.StatusCode.INVALID_ARGUMENT:
                self.store.update_dispatch(dispatch, state="FAILED", error=error.details())
                self._finish_trial(dispatch, _State.FAIL, error=error.details())
            else:
                self.attempt_failed(dispatch, f"StartTrial: {code.name}: {error.details()}")
            return None
        dispatch = self.store.update_dispatch(dispatch, state="RUNNING")
        self.sweeps.event(dispatch.sweep, "trial_started", dispatch.number,
                          f"{dispatch.worker_trial_id} on {dispatch.worker}")
        return dispatch

    def _watch(self, stub, dispatch: DispatchRow, sweep: OpenSweep) -> _T.Trial | None:
        """Follow events until the worker reports a final state; None if the worker was lost."""
        from_line, lost_since = 0, None
        while not self.sweeps.stopping.is_set():
            if self.store.sweep(dispatch.sweep).state == "CANCELLED" and not dispatch.pruned:
                self.cancel_on_worker(dispatch)
            try:
                for event in stub.WatchTrial(_T.WatchTrialRequest(trial_id=dispatch.worker_trial_id,
                                                                  from_line=from_line)):
                    lost_since = None
                    if event.line:
                        from_line = event.line
                    if event.event == "eval" and not dispatch.pruned:
                        dispatch = self.report(dispatch, sweep, event)
                    elif event.event == "state":
                        return stub.GetTrial(_T.TrialRef(trial_id=dispatch.worker_trial_id), timeout=30)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    self.attempt_failed(dispatch, f"worker {dispatch.worker} lost trial {dispatch.worker_trial_id}")
                    return None
                if error.code() not in RETRYABLE:
                    raise
                now = time.time()
                lost_since = lost_since or now
                if now - lost_since > sweep.spec.worker_lost_s:
                    dispatch = self.store.update_dispatch(dispatch, state="LOST", error="worker unreachable")
                    self.attempt_failed(dispatch, f"worker {dispatch.worker} unreachable for "
                                                  f"{sweep.spec.worker_lost_s:.0f}s", already_marked=True)
                    return None
                self.sweeps.event(dispatch.sweep, "worker_unreachable", dispatch.number, dispatch.worker)
                self.sweeps.stopping.wait(1.0)
        return None

    def report(self, dispatch: DispatchRow, sweep: OpenSweep, event: _T.TrialEvent) -> DispatchRow:
        """An ``eval`` event: its value to the pruner; a pruned attempt is marked and cancelled."""
        if sweep.spec.pruner.kind == "none":
            return dispatch
        value = intermediate_value(sweep.spec.pruner.metric, sweep.spec.objective, dict(event.metrics))
        if value is None:
            return dispatch
        prune = sweep.trials.report(dispatch.number, value, int(event.step))
        if prune is None:  # told already
            return dispatch
        self.sweeps.event(dispatch.sweep, "trial_progress", dispatch.number, f"step {event.step}: {value:.4f}")
        if prune:
            dispatch = self.store.update_dispatch(dispatch, pruned=1)
            self.sweeps.event(dispatch.sweep, "trial_pruned", dispatch.number, f"at step {event.step}")
            self.cancel_on_worker(dispatch)
        return dispatch

    def on_worker_finished(self, dispatch: DispatchRow, sweep: OpenSweep, trial: _T.Trial) -> None:
        metrics = dict(trial.metrics)
        accuracies = {f"{task}_accuracy": value for task, value in task_accuracies(metrics).items()}
        accuracies |= {f"{task}_n": n for task, n in task_item_counts(metrics).items()}  # for intervals
        attrs = {"metrics": accuracies, "steps": int(trial.last_step), "stop_reason": trial.stop_reason,
                 "worker": dispatch.worker, "worker_trial_id": dispatch.worker_trial_id, "attempts": dispatch.attempt,
                 "train_run_id": trial.tracking_run_ids.get("mlflow", ""),
                 "wandb_run_id": trial.tracking_run_ids.get("wandb", "")}
        # Tell Optuna first, then close the dispatch: a crash in between leaves the dispatch
        # active, the restarted controller re-attaches, and the second tell is skipped.
        if trial.state == _T.TRIAL_SUCCEEDED:
            value = objective_value(sweep.spec.objective, metrics)
            if value is None:
                self._finish_trial(dispatch, _State.FAIL, attrs=attrs,
                                   error=f"metrics.json has no {sweep.spec.objective} validation accuracy")
            else:
                self._finish_trial(dispatch, _State.COMPLETE, value=value, attrs=attrs)
            self.store.update_dispatch(dispatch, state="DONE")
        elif trial.state == _T.TRIAL_CANCELLED:
            state = _State.PRUNED if dispatch.pruned else _State.FAIL
            attrs["stop_reason"] = "pruned" if dispatch.pruned else "cancelled"
            self._finish_trial(dispatch, state, attrs=attrs)
            self.store.update_dispatch(dispatch, state="CANCELLED")
        else:
            self.attempt_failed(dispatch, trial.error or "training failed", attrs=attrs)

    def attempt_failed(self, dispatch: DispatchRow, error: str, attrs: dict | None = None,
                       already_marked: bool = False) -> None:
        """Queue the next attempt while retries are left (and the sweep runs), else the trial FAILs."""
        sweep = self.sweeps.open(dispatch.sweep)
        if dispatch.attempt <= sweep.spec.max_retries and self.store.sweep(dispatch.sweep).state == "RUNNING":
            # Queue the next attempt before closing this one (add_dispatch is idempotent on restart).
            self.store.add_dispatch(dispatch.sweep, dispatch.number, dispatch.attempt + 1, dispatch.optuna_trial_id,
                                    dispatch.overrides)
            self.sweeps.event(dispatch.sweep, "trial_retry", dispatch.number,
                              f"attempt {dispatch.attempt + 1}: {error[:300]}")
            if dispatch.state == "LOST":
                self.cancel_on_worker(dispatch)  # if that worker comes back, its copy must not run on
        else:
            self._finish_trial(dispatch, _State.FAIL, attrs=dict(attrs or {}, attempts=dispatch.attempt), error=error)
        if not already_marked:
            self.store.update_dispatch(dispatch, state="FAILED", error=error[:2000])

    def _finish_trial(self, dispatch: DispatchRow, state: optuna.trial.TrialState, value: float | None = None,
                      attrs: dict | None = None, error: str = "") -> None:
        attrs = dict(attrs or {}, attempts=dispatch.attempt, worker=dispatch.worker)
        if error:
            attrs["error"] = error[:2000]
        if not self.sweeps.open(dispatch.sweep).trials.tell(dispatch.number, state, value, attrs):
            return  # already told before a restart; its row and run are written
        view = self.sweeps.view(dispatch.sweep)
        trial = next(t for t in view.trials if t.number == dispatch.number)
        self.sweeps.event(dispatch.sweep, "trial_finished", dispatch.number,
                          f"{trial.state} objective={trial.objective} {trial.stop_reason or trial.error}")
        self.reporter.trial_finished(view, trial)

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            if address not in self._channels:
                self._channels[address] = self._channel_factory(address)
            return self._channels[address]
