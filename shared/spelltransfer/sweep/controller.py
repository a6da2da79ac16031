"""The sweep controller: Optuna studies whose trials run on trainer workers, behind ``SweepService``.

Thin: it validates requests and composes the parts that do the work —

- ``scheduler.TrialScheduler``: asks Optuna for trials when a worker slot is free and dispatches
  them; completes the sweep; re-attaches after a restart;
- ``follower.TrialFollower``: one thread per attempt on its worker — start, events, pruning,
  retries, telling Optuna the result;
- ``reporting.SweepReporter``: trials.csv, MLflow, W&B, the analysis and the champion;
- ``open_sweeps.OpenSweeps``: the store, the open sweeps and their events, shared by all three.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import grpc
import optuna

from spelltransfer.errors import ConfigError
from spelltransfer.platform import limits
from spelltransfer.platform.errors import FailedPreconditionError, NotFoundError
from spelltransfer.platform.roots import ServiceRoots
from spelltransfer.platform.security import open_channel
from spelltransfer.sweep.admission import check_spec_paths, check_sweep
from spelltransfer.sweep.follower import TrialFollower
from spelltransfer.sweep.open_sweeps import OpenSweeps
from spelltransfer.sweep.reporting import SweepReporter
from spelltransfer.sweep.scheduler import TrialScheduler
from spelltransfer.sweep.spec import parse_spec
from spelltransfer.sweep.store import ACTIVE_DISPATCH, ControllerStore
from spelltransfer.sweep.study import storage_url
from spelltransfer.sweep.views import SweepView, TrialView
from spelltransfer.sweep.workers import WorkerPool

__all__ = ["SweepController", "SweepView", "TrialView", "check_spec_paths"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


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
        self.sweeps = OpenSweeps(self.store)
        self.pool = WorkerPool(self.store, heartbeat_timeout_s)
        self.reporter = SweepReporter(self.sweeps)
        self.follower = TrialFollower(self.sweeps, self.pool, self.reporter,
                                      channel_factory or _fast_reconnect_channel)
        self.scheduler = TrialScheduler(self.sweeps, self.pool, self.follower, self.reporter, self.roots,
                                        poll_s)
        for address in workers:
            self.pool.register(address, default_slots, static=True)
        self.scheduler.recover()
        self.scheduler.start()

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
        check_sweep(spec, self.roots)
        url = storage_url(spec, self.state_dir)
        self.sweeps.add(spec, url)
        self.store.add_sweep(spec.name, spec.to_yaml(), url)
        self.sweeps.event(spec.name, "submitted", -1, f"{spec.trial_count()} trial(s), strategy {spec.strategy}")
        return self.get(spec.name)

    def get(self, name: str) -> SweepView:
        return self.sweeps.view(name)

    def list(self) -> list[SweepView]:
        return [self.get(row.name) for row in self.store.sweeps()]

    def cancel(self, name: str) -> SweepView:
        row = self.store.sweep(name)
        if row is None:
            raise NotFoundError(f"name: no sweep {name!r}")
        if row.state != "RUNNING":
            return self.get(name)
        self.store.update_sweep(name, state="CANCELLED", finished_at=time.time())
        trials = self.sweeps.open(name).trials
        for dispatch in self.store.dispatches(name, ACTIVE_DISPATCH):
            if dispatch.state == "QUEUED":
                self.store.update_dispatch(dispatch, state="CANCELLED")
                trials.tell(dispatch.number, optuna.trial.TrialState.FAIL, attrs={"stop_reason": "sweep cancelled"})
            elif dispatch.worker:
                self.follower.cancel_on_worker(dispatch)
        self.sweeps.event(name, "sweep_cancelled", -1, "cancelled by request")
        self.reporter.close(name)
        return self.get(name)

    def watch(self, name: str, is_active: Callable[[], bool] = lambda: True) -> Iterator[tuple[str, int, str, SweepView]]:
        """A snapshot, then every event of the sweep until it is finished."""
        view = self.get(name)
        sweep = self.sweeps.open(name)
        yield "snapshot", -1, "", view
        seen = len(sweep.events)
        while is_active() and view.state == "RUNNING":
            self.sweeps.wait(1.0)
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
        self.pool.register(address, slots)
        self.sweeps.notify()
        return self.pool.describe(address)

    def workers(self) -> list[dict]:
        return self.pool.describe_all()

    def close(self) -> None:
        self.sweeps.stopping.set()
        self.sweeps.notify()
        self.scheduler.join(timeout=10)
        self.follower.close(timeout=10)


def _fast_reconnect_channel(address: str) -> grpc.Channel:
    # A restarted worker should be found within a second or two, not after gRPC's default backoff (up to 120 s).
    return open_channel(address, options=[("grpc.initial_reconnect_backoff_ms", 200),
                                          ("grpc.min_reconnect_backoff_ms", 200),
                                          ("grpc.max_reconnect_backoff_ms", 1000)])
