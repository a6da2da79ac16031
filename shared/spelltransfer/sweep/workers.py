"""The trainer workers a controller knows: listed (static) or registered (alive while they send
heartbeats), each with ``slots`` trials at a time, skipped for a moment after refusing one."""

from __future__ import annotations

import time

from spelltransfer.sweep.store import ControllerStore

PLACED = ("ASSIGNED", "RUNNING")  # dispatch states that hold a worker slot


class WorkerPool:
    def __init__(self, store: ControllerStore, heartbeat_timeout_s: float):
        self.store = store
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._unreachable_until: dict[str, float] = {}

    def register(self, address: str, slots: int, static: bool = False) -> None:
        self.store.upsert_worker(address, slots, static=static)
        self._unreachable_until.pop(address, None)

    def back_off(self, address: str, seconds: float = 3.0) -> None:
        """Place nothing on ``address`` for ``seconds`` (it was unreachable or full)."""
        self._unreachable_until[address] = time.time() + seconds

    def free(self) -> str | None:
        """The reachable worker with the most free slots, or None."""
        now = time.time()
        busy: dict[str, int] = {}
        for dispatch in self.store.dispatches(states=PLACED):
            busy[dispatch.worker] = busy.get(dispatch.worker, 0) + 1
        best, best_free = None, 0
        for worker in self.store.workers():
            if not self._reachable(worker, now):
                continue
            free = worker.slots - busy.get(worker.address, 0)
            if free > best_free:
                best, best_free = worker.address, free
        return best

    def describe(self, address: str) -> dict:
        worker = self.store.workers(address)[0]
        busy = len([d for d in self.store.dispatches(states=PLACED) if d.worker == address])
        return {"address": address, "slots": worker.slots, "busy": busy,
                "reachable": self._reachable(worker, time.time())}

    def describe_all(self) -> list[dict]:
        return [self.describe(w.address) for w in self.store.workers()]

    def _reachable(self, worker, now: float) -> bool:
        alive = worker.static or now - worker.last_seen <= self.heartbeat_timeout_s
        return alive and self._unreachable_until.get(worker.address, 0) <= now
