"""The sweep controller's engine: ask Optuna for trials, run them on trainer workers, tell results.

One scheduler thread places work; one follower thread per running attempt talks to its worker:

- **ask** only when a worker slot is free (``slots`` per worker, so a worker may take K trials);
  the trial's params are checked against the training config first — a combination the config
  rejects is told FAIL at once and never dispatched;
- **dispatch**: a row (worker, deterministic worker-side id ``<sweep>-<number>-a<attempt>``) is
  written before ``StartTrial``, which is idempotent on the worker — so after a controller crash the
  follower re-attaches to the same run and no trial runs twice;
- **follow**: stream ``WatchTrial``; every ``eval`` event's objective is reported to Optuna and the
  pruner may cancel the trial; reconnect while the worker restarts (it resumes from its checkpoint);
- **finish**: success -> COMPLETE with the objective; failure -> a new attempt (up to
  ``max_retries``) on any worker, then FAIL; pruned -> PRUNED. Each finish rewrites trials.csv and
  logs an MLflow child run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import grpc
import optuna

from spelltransfer.errors import ConfigError
from spelltransfer.platform import limits
from spelltransfer.platform.errors import FailedPreconditionError, NotFoundError
from spelltransfer.platform.protos import trainer_pb2, trainer_pb2_grpc
from spelltransfer.platform.roots import ServiceRoots
from spelltransfer.platform.security import open_channel
from spelltransfer.sweep import results
from spelltransfer.sweep.spec import SweepSpec, check_training_config, parse_spec, trial_overrides
from spelltransfer.sweep.store import ACTIVE_DISPATCH, ControllerStore, DispatchRow
from spelltransfer.sweep.study import (intermediate_value, objective_value, open_study, storage_url, suggest,
                                      task_accuracies, task_item_counts)

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
_T = trainer_pb2
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


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


@dataclass
class _Sweep:
    spec: SweepSpec
    study: optuna.Study
    events: list[tuple[str, int, str]] = field(default_factory=list)


class SweepController:
    """Sweeps over Optuna studies, dispatched to registered trainer workers."""

    def __init__(self, state_dir: str | Path, workers: list[str] | tuple[str, ...] = (), default_slots: int = 1,
                 heartbeat_timeout_s: float = 15.0, poll_s: float = 0.5,
                 channel_factory: Callable[[str], grpc.Channel] | None = None, roots: ServiceRoots | None = None):
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Specs may name paths under the roots; the default Optuna storage is in the state dir.
        self.roots = (roots or ServiceRoots.from_env()).adding(storage=[self.state_dir])
        self.store = ControllerStore(self.state_dir / "controller.db")
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._poll_s = poll_s
        self._channel_factory = channel_factory or _fast_reconnect_channel
        self._channels: dict[str, grpc.Channel] = {}
        self._sweeps: dict[str, _Sweep] = {}
        self._followers: dict[tuple[str, int, int], threading.Thread] = {}
        self._unreachable_until: dict[str, float] = {}
        self._lock = threading.RLock()        # controller state (sweeps, followers, channels)
        self._optuna = threading.RLock()      # one Optuna call at a time (SQLite storage)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        for address in workers:
            self.store.upsert_worker(address, default_slots, static=True)
        self._recover()
        self._scheduler = threading.Thread(target=self._schedule_forever, name="sweep-scheduler", daemon=True)
        self._scheduler.start()

    # ---------------------------------------------------------------- requests

    def submit(self, spec_yaml: str, source: str = "sweep spec") -> SweepView:
        """Validate the spec and the training config it points at; nothing starts unless both pass."""
        limits.check_text("spec_yaml", spec_yaml, limits.MAX_SPEC_BYTES)
        limits.check_text("source", source, limits.MAX_PATH_BYTES)
        spec = parse_spec(spec_yaml, source)
        existing = self.store.sweep(spec.name)
        if existing is not None:
            if parse_spec(existing.spec_yaml).model_dump() == spec.model_dump():
                return self.get(spec.name)  # the same submit again (e.g. a retried RPC)
            raise FailedPreconditionError(f"name: sweep {spec.name!r} already exists with another spec; pick a new name")
        check_spec_paths(spec, self.roots)  # before the base config is opened
        check_training_config(spec)
        self._check_config_paths(spec, "base_config/overrides", trial_overrides(spec, {}))
        url = storage_url(spec, self.state_dir)
        with self._optuna:
            study = open_study(spec, url)
        self.store.add_sweep(spec.name, spec.to_yaml(), url)
        with self._lock:
            self._sweeps[spec.name] = _Sweep(spec, study)
        self._event(spec.name, "submitted", -1, f"{spec.trial_count()} trial(s), strategy {spec.strategy}")
        return self.get(spec.name)

    def _check_config_paths(self, spec: SweepSpec, field: str, overrides: list[str]) -> None:
        """The paths of the training config a trial would run (base config + overrides) are under the roots."""
        from spelltransfer.train.config import load_training_config

        try:
            self.roots.check_run_config(load_training_config(spec.base_config, overrides))
        except ConfigError as error:
            raise ConfigError(f"{field}: {error}") from None

    def get(self, name: str) -> SweepView:
        row = self.store.sweep(name)
        if row is None:
            raise NotFoundError(f"name: no sweep {name!r}")
        sweep = self._open(name)
        with self._optuna:
            frozen = sweep.study.get_trials(deepcopy=False)
        dispatches = self.store.dispatches(name)
        trials = [self._trial_view(t, [d for d in dispatches if d.number == t.number]) for t in frozen]
        complete = [t for t in trials if t.state == "COMPLETE" and t.objective is not None]
        best = max(complete, key=lambda t: t.objective, default=None)
        return SweepView(
            name=name, state=row.state, objective=sweep.spec.objective, max_trials=sweep.spec.trial_count(),
            trials=trials, best_number=best.number if best else -1, best_value=best.objective if best else 0.0,
            trials_csv=str(results.trials_csv_path(sweep.spec.results_dir, name)), mlflow_run_id=row.mlflow_run_id,
            error=row.error, created_at=row.created_at, finished_at=row.finished_at)

    def list(self) -> list[SweepView]:
        return [self.get(row.name) for row in self.store.sweeps()]

    def cancel(self, name: str) -> SweepView:
        row = self.store.sweep(name)
        if row is None:
            raise NotFoundError(f"name: no sweep {name!r}")
        if row.state != "RUNNING":
            return self.get(name)
        self.store.update_sweep(name, state="CANCELLED", finished_at=time.time())
        for dispatch in self.store.dispatches(name, ACTIVE_DISPATCH):
            if dispatch.state == "QUEUED":
                self.store.update_dispatch(dispatch, state="CANCELLED")
                self._tell(name, dispatch.number, optuna.trial.TrialState.FAIL, attrs={"stop_reason": "sweep cancelled"})
            elif dispatch.worker:
                self._cancel_on_worker(dispatch)
        self._event(name, "sweep_cancelled", -1, "cancelled by request")
        self._finish_sweep(name)
        return self.get(name)

    def watch(self, name: str, is_active: Callable[[], bool] = lambda: True) -> Iterator[tuple[str, int, str, SweepView]]:
        """A snapshot, then every event of the sweep until it is finished."""
        view = self.get(name)
        sweep = self._open(name)
        yield "snapshot", -1, "", view
        seen = len(sweep.events)
        while is_active() and view.state == "RUNNING":
            with self._changed:
                self._changed.wait(timeout=1.0)
            new = sweep.events[seen:]
            seen += len(new)
            view = self.get(name)
            for kind, number, message in new:
                yield kind, number, message, view
        if view.state != "RUNNING":
            yield "sweep_finished", -1, view.state, view

    def register_worker(self, address: str, slots: int) -> dict:
        limits.check_text("address", address, limits.MAX_ADDRESS_BYTES)
        if not address or ":" not in address:
            raise ConfigError(f"address: expected host:port (got {address!r})")
        if slots < 1:
            raise ConfigError(f"slots: must be >= 1 (got {slots})")
        self.store.upsert_worker(address, slots)
        self._unreachable_until.pop(address, None)
        self._notify()
        return self._worker_dict(address)

    def workers(self) -> list[dict]:
        return [self._worker_dict(w.address) for w in self.store.workers()]

    def close(self) -> None:
        self._stop.set()
        self._notify()
        self._scheduler.join(timeout=10)
        with self._lock:
            followers = list(self._followers.values())
        for thread in followers:
            thread.join(timeout=10)
        for channel in self._channels.values():
            channel.close()

    # ---------------------------------------------------------------- scheduling

    def _schedule_forever(self) -> None:
        while not self._stop.is_set():
            try:
                for row in self.store.sweeps("RUNNING"):
                    self._schedule(row.name)
            except Exception:
                log.exception("scheduler tick failed")
            with self._changed:
                self._changed.wait(timeout=self._poll_s)

    def _schedule(self, name: str) -> None:
        sweep = self._open(name)
        spec = sweep.spec
        while not self._stop.is_set():
            active = self.store.dispatches(name, ACTIVE_DISPATCH)
            queued = [d for d in active if d.state == "QUEUED"]
            placed = len(active) - len(queued)
            if spec.parallelism is not None and placed >= spec.parallelism:
                break
            worker = self._free_worker()
            if worker is None:
                break
            if queued:
                self._start_follower(self.store.update_dispatch(queued[0], state="ASSIGNED", worker=worker))
                continue
            with self._optuna:
                asked = len(sweep.study.get_trials(deepcopy=False))
            if asked >= spec.trial_count():
                break
            self._ask(name, sweep)
        self._ensure_parent_run(name)  # after dispatching: creating an MLflow store can take seconds
        self._maybe_complete(name)

    def _ask(self, name: str, sweep: _Sweep) -> None:
        with self._optuna:
            trial = sweep.study.ask()
            params = suggest(trial, sweep.spec)
        try:
            check_training_config(sweep.spec, params)
            self._check_config_paths(sweep.spec, "parameters", trial_overrides(sweep.spec, params))
        except ConfigError as error:
            self._tell(name, trial.number, optuna.trial.TrialState.FAIL, attrs={"error": str(error), "attempts": 0})
            self._event(name, "trial_rejected", trial.number, str(error))
            return
        self.store.add_dispatch(name, trial.number, 1, trial._trial_id, trial_overrides(sweep.spec, params))
        self._event(name, "trial_queued", trial.number, json.dumps(params))

    def _free_worker(self) -> str | None:
        now = time.time()
        busy: dict[str, int] = {}
        for dispatch in self.store.dispatches(states=("ASSIGNED", "RUNNING")):
            busy[dispatch.worker] = busy.get(dispatch.worker, 0) + 1
        best, best_free = None, 0
        for worker in self.store.workers():
            alive = worker.static or now - worker.last_seen <= self.heartbeat_timeout_s
            if not alive or self._unreachable_until.get(worker.address, 0) > now:
                continue
            free = worker.slots - busy.get(worker.address, 0)
            if free > best_free:
                best, best_free = worker.address, free
        return best

    def _maybe_complete(self, name: str) -> None:
        sweep = self._open(name)
        if self.store.dispatches(name, ACTIVE_DISPATCH):
            return
        with self._optuna:
            trials = sweep.study.get_trials(deepcopy=False)
        if len(trials) < sweep.spec.trial_count() or any(t.state not in FINISHED for t in trials):
            return
        # A sweep none of whose trials succeeded has no result: FAILED, with the trials' reasons.
        succeeded = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        state, error = ("COMPLETED", "") if succeeded else ("FAILED", _no_success_error(trials))
        # Both before the final state: a watcher may stop the platform right after it.
        self._register_champion(name)
        analysis_dir = self._analyse(self.get(name))
        self._log_wandb(name, analysis_dir, state=state)
        self.store.update_sweep(name, state=state, finished_at=time.time(), error=error)
        self._event(name, "sweep_finished", -1, state if not error else f"{state}: {error}")
        self._finish_sweep(name, analysed=True, analysis_dir=analysis_dir)

    # ---------------------------------------------------------------- following one attempt

    def _start_follower(self, dispatch: DispatchRow) -> None:
        key = (dispatch.sweep, dispatch.number, dispatch.attempt)
        with self._lock:
            if key in self._followers and self._followers[key].is_alive():
                return
            thread = threading.Thread(target=self._follow_safely, args=(dispatch,), daemon=True,
                                      name=f"follow-{dispatch.worker_trial_id}")
            self._followers[key] = thread
        thread.start()

    def _follow_safely(self, dispatch: DispatchRow) -> None:
        try:
            self._follow(dispatch)
        except Exception as error:
            log.exception("following %s failed", dispatch.worker_trial_id)
            self._attempt_failed(self.store.dispatch(dispatch.sweep, dispatch.number, dispatch.attempt),
                                 f"controller error: {error}")
        finally:
            self._notify()

    def _follow(self, dispatch: DispatchRow) -> None:
        sweep = self._open(dispatch.sweep)
        stub = trainer_pb2_grpc.TrainerServiceStub(self._channel(dispatch.worker))
        if dispatch.state == "ASSIGNED":
            request = _T.StartTrialRequest(
                trial_id=dispatch.worker_trial_id, config_path=sweep.spec.base_config, overrides=dispatch.overrides,
                labels={"sweep": dispatch.sweep, "number": str(dispatch.number), "attempt": str(dispatch.attempt)},
                evaluate=sweep.spec.evaluate)
            try:
                stub.StartTrial(request, timeout=60)
            except grpc.RpcError as error:
                code = error.code()
                if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, *_RETRYABLE):
                    # Nothing started: put it back in the queue for any worker.
                    self._unreachable_until[dispatch.worker] = time.time() + 3.0
                    self.store.update_dispatch(dispatch, state="QUEUED", worker="")
                    return
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    self.store.update_dispatch(dispatch, state="FAILED", error=error.details())
                    self._finish_trial(dispatch, optuna.trial.TrialState.FAIL, error=error.details())
                    return
                self._attempt_failed(dispatch, f"StartTrial: {code.name}: {error.details()}")
                return
            dispatch = self.store.update_dispatch(dispatch, state="RUNNING")
            self._event(dispatch.sweep, "trial_started", dispatch.number,
                        f"{dispatch.worker_trial_id} on {dispatch.worker}")
        final = self._watch(stub, dispatch, sweep)
        if final is None:
            return
        dispatch = self.store.dispatch(dispatch.sweep, dispatch.number, dispatch.attempt)
        self._on_worker_finished(stub, dispatch, sweep, final)

    def _watch(self, stub, dispatch: DispatchRow, sweep: _Sweep) -> _T.Trial | None:
        """Follow events until the worker reports a final state; None if the worker was lost."""
        from_line, lost_since = 0, None
        while not self._stop.is_set():
            if self.store.sweep(dispatch.sweep).state == "CANCELLED" and not dispatch.pruned:
                self._cancel_on_worker(dispatch)
            try:
                for event in stub.WatchTrial(_T.WatchTrialRequest(trial_id=dispatch.worker_trial_id,
                                                                  from_line=from_line)):
                    lost_since = None
                    if event.line:
                        from_line = event.line
                    if event.event == "eval" and not dispatch.pruned:
                        dispatch = self._report(stub, dispatch, sweep, event)
                    elif event.event == "state":
                        return stub.GetTrial(_T.TrialRef(trial_id=dispatch.worker_trial_id), timeout=30)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    self._attempt_failed(dispatch, f"worker {dispatch.worker} lost trial {dispatch.worker_trial_id}")
                    return None
                if error.code() not in _RETRYABLE:
                    raise
                now = time.time()
                lost_since = lost_since or now
                if now - lost_since > sweep.spec.worker_lost_s:
                    dispatch = self.store.update_dispatch(dispatch, state="LOST", error="worker unreachable")
                    self._attempt_failed(dispatch, f"worker {dispatch.worker} unreachable for "
                                                   f"{sweep.spec.worker_lost_s:.0f}s", already_marked=True)
                    return None
                self._event(dispatch.sweep, "worker_unreachable", dispatch.number, dispatch.worker)
                self._stop.wait(1.0)
        return None

    def _report(self, stub, dispatch: DispatchRow, sweep: _Sweep, event: _T.TrialEvent) -> DispatchRow:
        if sweep.spec.pruner.kind == "none":
            return dispatch
        value = intermediate_value(sweep.spec.pruner.metric, sweep.spec.objective, dict(event.metrics))
        if value is None:
            return dispatch
        with self._optuna:
            trial = optuna.trial.Trial(sweep.study, dispatch.optuna_trial_id)
            if sweep.study._storage.get_trial(dispatch.optuna_trial_id).state in FINISHED:
                return dispatch
            trial.report(value, int(event.step))
            prune = trial.should_prune()
        self._event(dispatch.sweep, "trial_progress", dispatch.number, f"step {event.step}: {value:.4f}")
        if prune:
            dispatch = self.store.update_dispatch(dispatch, pruned=1)
            self._event(dispatch.sweep, "trial_pruned", dispatch.number, f"at step {event.step}")
            self._cancel_on_worker(dispatch)
        return dispatch

    def _on_worker_finished(self, stub, dispatch: DispatchRow, sweep: _Sweep, trial: _T.Trial) -> None:
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
                self._finish_trial(dispatch, optuna.trial.TrialState.FAIL, attrs=attrs,
                                   error=f"metrics.json has no {sweep.spec.objective} validation accuracy")
            else:
                self._finish_trial(dispatch, optuna.trial.TrialState.COMPLETE, value=value, attrs=attrs)
            self.store.update_dispatch(dispatch, state="DONE")
        elif trial.state == _T.TRIAL_CANCELLED:
            state = optuna.trial.TrialState.PRUNED if dispatch.pruned else optuna.trial.TrialState.FAIL
            attrs["stop_reason"] = "pruned" if dispatch.pruned else "cancelled"
            self._finish_trial(dispatch, state, attrs=attrs)
            self.store.update_dispatch(dispatch, state="CANCELLED")
        else:
            self._attempt_failed(dispatch, trial.error or "training failed", attrs=attrs)

    def _attempt_failed(self, dispatch: DispatchRow, error: str, attrs: dict | None = None,
                        already_marked: bool = False) -> None:
        sweep = self._open(dispatch.sweep)
        if dispatch.attempt <= sweep.spec.max_retries and self.store.sweep(dispatch.sweep).state == "RUNNING":
            # Queue the next attempt before closing this one (add_dispatch is idempotent on restart).
            self.store.add_dispatch(dispatch.sweep, dispatch.number, dispatch.attempt + 1, dispatch.optuna_trial_id,
                                    dispatch.overrides)
            self._event(dispatch.sweep, "trial_retry", dispatch.number, f"attempt {dispatch.attempt + 1}: {error[:300]}")
            if dispatch.state == "LOST":
                self._cancel_on_worker(dispatch)  # if that worker comes back, its copy must not run on
        else:
            self._finish_trial(dispatch, optuna.trial.TrialState.FAIL,
                               attrs=dict(attrs or {}, attempts=dispatch.attempt), error=error)
        if not already_marked:
            self.store.update_dispatch(dispatch, state="FAILED", error=error[:2000])

    def _finish_trial(self, dispatch: DispatchRow, state, value: float | None = None, attrs: dict | None = None,
                      error: str = "") -> None:
        attrs = dict(attrs or {}, attempts=dispatch.attempt, worker=dispatch.worker)
        if error:
            attrs["error"] = error[:2000]
        if not self._tell(dispatch.sweep, dispatch.number, state, value, attrs):
            return  # already told before a restart; its row and run are written
        view = self.get(dispatch.sweep)
        trial = next(t for t in view.trials if t.number == dispatch.number)
        self._event(dispatch.sweep, "trial_finished", dispatch.number,
                    f"{trial.state} objective={trial.objective} {trial.stop_reason or trial.error}")
        self._write_csv(view)
        self._log_child_run(view, trial)

    def _tell(self, name: str, number: int, state, value: float | None = None, attrs: dict | None = None) -> bool:
        """Record the trial's end in Optuna; False if it had ended already."""
        sweep = self._open(name)
        with self._optuna:
            trial_id = sweep.study._storage.get_trial_id_from_study_id_trial_number(sweep.study._study_id, number)
            if sweep.study._storage.get_trial(trial_id).state in FINISHED:
                return False
            for key, item in (attrs or {}).items():
                sweep.study._storage.set_trial_user_attr(trial_id, key, item)
            sweep.study.tell(number, value if state == optuna.trial.TrialState.COMPLETE else None, state=state,
                             skip_if_finished=True)
        return True

    def _cancel_on_worker(self, dispatch: DispatchRow) -> None:
        try:
            trainer_pb2_grpc.TrainerServiceStub(self._channel(dispatch.worker)).CancelTrial(
                _T.TrialRef(trial_id=dispatch.worker_trial_id), timeout=10)
        except grpc.RpcError as error:
            log.warning("cancel %s on %s: %s", dispatch.worker_trial_id, dispatch.worker, error.code().name)

    # ---------------------------------------------------------------- restart

    def _recover(self) -> None:
        """Re-attach to every attempt that was placed, and queue trials asked but never recorded."""
        for row in self.store.sweeps("RUNNING"):
            sweep = self._open(row.name)
            with self._optuna:
                trials = sweep.study.get_trials(deepcopy=False)
            recorded = {d.number for d in self.store.dispatches(row.name)}
            for frozen in trials:
                if frozen.state == optuna.trial.TrialState.RUNNING and frozen.number not in recorded:
                    with self._optuna:
                        params = suggest(optuna.trial.Trial(sweep.study, frozen._trial_id), sweep.spec)
                    self.store.add_dispatch(row.name, frozen.number, 1, frozen._trial_id,
                                            trial_overrides(sweep.spec, params))
            active = {d.number for d in self.store.dispatches(row.name, ACTIVE_DISPATCH)}
            for frozen in trials:
                if frozen.state == optuna.trial.TrialState.RUNNING and frozen.number in recorded \
                        and frozen.number not in active:
                    # Every attempt closed but Optuna never told: count it failed rather than risk a rerun.
                    self._tell(row.name, frozen.number, optuna.trial.TrialState.FAIL,
                               attrs={"error": "controller stopped between finishing and recording this trial"})
            for dispatch in self.store.dispatches(row.name, ("ASSIGNED", "RUNNING")):
                self._start_follower(dispatch)
            self._event(row.name, "controller_restarted", -1, "re-attached to running trials")

    # ---------------------------------------------------------------- helpers

    def _open(self, name: str) -> _Sweep:
        with self._lock:
            if name in self._sweeps:
                return self._sweeps[name]
            row = self.store.sweep(name)
            if row is None:
                raise NotFoundError(f"name: no sweep {name!r}")
            spec = parse_spec(row.spec_yaml, f"stored spec of {name}")
            with self._optuna:
                study = open_study(spec, row.storage_url)
            self._sweeps[name] = _Sweep(spec, study)
            return self._sweeps[name]

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            if address not in self._channels:
                self._channels[address] = self._channel_factory(address)
            return self._channels[address]

    def _trial_view(self, frozen: optuna.trial.FrozenTrial, dispatches: list[DispatchRow]) -> TrialView:
        attrs = frozen.user_attrs
        last = dispatches[-1] if dispatches else None
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
            objective=frozen.value if frozen.state == optuna.trial.TrialState.COMPLETE else None,
            metrics=dict(attrs.get("metrics", {})), steps=int(attrs.get("steps", 0)),
            stop_reason=str(attrs.get("stop_reason", "")),
            train_run_id=str(attrs.get("train_run_id", "")), wandb_run_id=str(attrs.get("wandb_run_id", "")),
            error=str(attrs.get("error", last.error if last and frozen.state != optuna.trial.TrialState.COMPLETE else "")),
            duration_s=max(0.0, end - start))

    def _worker_dict(self, address: str) -> dict:
        worker = self.store.workers(address)[0]
        busy = len([d for d in self.store.dispatches(states=("ASSIGNED", "RUNNING")) if d.worker == address])
        reachable = (worker.static or time.time() - worker.last_seen <= self.heartbeat_timeout_s) and \
            self._unreachable_until.get(address, 0) <= time.time()
        return {"address": address, "slots": worker.slots, "busy": busy, "reachable": reachable}

    def _event(self, name: str, kind: str, number: int, message: str) -> None:
        log.info("sweep %s: %s %s %s", name, kind, number if number >= 0 else "", message)
        try:
            self._open(name).events.append((kind, number, message))
        except NotFoundError:
            return
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _write_csv(self, view: SweepView) -> None:
        try:
            results.write_trials_csv(Path(view.trials_csv), view)
        except OSError:
            log.exception("writing %s failed", view.trials_csv)

    def _tracker(self, name: str) -> results.SweepTracker | None:
        spec = self._open(name).spec
        if not spec.mlflow.enabled:
            return None
        with self._lock:
            if not hasattr(self, "_trackers"):
                self._trackers: dict[str, results.SweepTracker] = {}
            if name not in self._trackers:
                self._trackers[name] = results.SweepTracker(spec.mlflow.tracking_uri, spec.mlflow.experiment or "sweeps")
            return self._trackers[name]

    def _ensure_parent_run(self, name: str) -> None:
        row = self.store.sweep(name)
        if row.mlflow_run_id:
            return
        try:
            tracker = self._tracker(name)
            if tracker is None:
                return
            spec = self._open(name).spec
            params = {"objective": spec.objective, "strategy": spec.strategy, "max_trials": str(spec.max_trials),
                      "pruner": spec.pruner.kind, "base_config": spec.base_config}
            run_id = tracker.start_sweep(name, row.spec_yaml, params, key=f"{name}@{row.created_at!r}")
            self.store.update_sweep(name, mlflow_run_id=run_id)
        except Exception:
            log.exception("MLflow parent run for %s failed (the sweep goes on)", name)

    def _log_child_run(self, view: SweepView, trial: TrialView) -> None:
        if not view.mlflow_run_id:
            return
        try:
            tracker = self._tracker(view.name)
            if tracker is not None:
                tracker.log_trial(view.mlflow_run_id, view.name, trial)
        except Exception:
            log.exception("MLflow child run for %s trial %d failed", view.name, trial.number)

    def _sync_child_runs(self, view: SweepView) -> None:
        """Log a child run for every finished trial that has none (the controller may have died
        between telling Optuna and logging to MLflow)."""
        tracker = self._tracker(view.name)
        if tracker is None or not view.mlflow_run_id:
            return
        tracker.sync_trials(view.mlflow_run_id, view.name, view.trials)

    def _finish_sweep(self, name: str, analysed: bool = False, analysis_dir: Path | None = None) -> None:
        view = self.get(name)
        if not analysed:  # a cancelled sweep: what ran is still worth reading (writes trials.csv first)
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

    def _log_wandb(self, name: str, analysis_dir: Path | None, state: str | None = None) -> None:
        """``wandb.enabled``: the sweep's summary run (trials table, analysis, figures); never fails the sweep."""
        spec = self._open(name).spec
        if not spec.wandb.enabled:
            return
        view = self.get(name)
        if state is not None:  # logged just before the state is stored
            view = replace(view, state=state)
        try:
            from spelltransfer.sweep.wandb_report import log_sweep_run

            run_id = log_sweep_run(spec, view, analysis_dir)
        except Exception as error:
            log.exception("the W&B summary run of %s failed", name)
            self._event(name, "wandb_failed", -1, f"W&B: {error}"[:500])
            return
        self._event(name, "wandb_logged", -1, run_id)
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
        self._write_csv(view)
        try:
            analyse_sweep(trials_csv).save(out)
        except DataError as error:
            log.info("no analysis of %s: %s", view.name, error)
            return None
        except Exception:
            log.exception("the analysis of %s failed", view.name)
            return None
        self._event(view.name, "sweep_analysed", -1, str(out / "sweep_analysis.md"))
        return out

    def _register_champion(self, name: str) -> None:
        """``registry.enabled``: the best trial's adapter becomes ``model_name@alias`` (the registry's
        own ``register_best_trial``, reading the child runs); a failure is an event, not a failed sweep."""
        spec = self._open(name).spec
        view = self.get(name)
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
            self._event(name, "champion_registered", view.best_number,
                        f"{registered.name}@{spec.registry.alias} = version {registered.version} "
                        f"(run {registered.run_id}, {registered.metric}={registered.value:.4g})")
        except Exception as error:
            log.exception("registering the champion of %s failed", name)
            self._event(name, "champion_failed", -1, f"registry: {error}"[:500])


def check_spec_paths(spec: SweepSpec, roots: ServiceRoots) -> None:
    """Every path the spec names lies under the service's roots (``spelltransfer.platform.roots``),
    and its overrides are within the size limits: base_config, results_dir, storage, the W&B dir
    and MLflow URI, path-valued fixed overrides and every listed value of a path-valued parameter.
    Raises ConfigError naming the field."""
    limits.check_overrides("overrides", spec.overrides)
    roots.check("configs", "base_config", spec.base_config)
    roots.check("results", "results_dir", spec.results_dir)
    roots.check_storage_url("storage", spec.storage)
    roots.check_tracking_uri("mlflow.tracking_uri", spec.mlflow.tracking_uri)
    if spec.wandb.dir:
        roots.check("results", "wandb.dir", spec.wandb.dir)
    for assignment in spec.overrides:
        key, _, value = assignment.partition("=")
        roots.check_setting(key.strip(), value.strip() or None, f"overrides: {key.strip()}")
    for name, parameter in spec.parameters.items():
        for value in parameter.values or []:
            limits.check_text(f"parameters.{name} value", trial_overrides(spec, {name: value})[-1],
                              limits.MAX_OVERRIDE_BYTES)
            roots.check_setting(name, value, f"parameters.{name}")


def _no_success_error(trials: list[optuna.trial.FrozenTrial]) -> str:
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


def _fast_reconnect_channel(address: str) -> grpc.Channel:
    # A restarted worker should be found within a second or two, not after gRPC's default backoff (up to 120 s).
    return open_channel(address, options=[("grpc.initial_reconnect_backoff_ms", 200),
                                          ("grpc.min_reconnect_backoff_ms", 200),
                                          ("grpc.max_reconnect_backoff_ms", 1000)])
