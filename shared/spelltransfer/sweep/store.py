"""The controller's own state (SQLite): sweeps, dispatches of trials to workers, known workers.

Optuna's storage holds the study (params, intermediate values, final states); this table holds
what Optuna does not know: which worker runs which attempt of a trial under which id. A dispatch
row is written *before* the worker is called, and the worker-side id is deterministic, so a
restarted controller re-attaches to exactly the runs it started and never starts one twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# Dispatch states: QUEUED (no worker yet) -> ASSIGNED (worker chosen, StartTrial may be in flight)
# -> RUNNING (worker accepted) -> DONE | FAILED | CANCELLED | LOST.
ACTIVE_DISPATCH = ("QUEUED", "ASSIGNED", "RUNNING")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sweeps (
      name TEXT PRIMARY KEY, spec_yaml TEXT NOT NULL, storage_url TEXT NOT NULL, state TEXT NOT NULL,
      created_at REAL NOT NULL, finished_at REAL NOT NULL DEFAULT 0, mlflow_run_id TEXT NOT NULL DEFAULT '',
      error TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS dispatches (
      sweep TEXT NOT NULL, number INTEGER NOT NULL, attempt INTEGER NOT NULL, optuna_trial_id INTEGER NOT NULL,
      overrides TEXT NOT NULL, state TEXT NOT NULL, worker TEXT NOT NULL DEFAULT '', worker_trial_id TEXT NOT NULL,
      pruned INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL,
      updated_at REAL NOT NULL, PRIMARY KEY (sweep, number, attempt))""",
    """CREATE TABLE IF NOT EXISTS workers (
      address TEXT PRIMARY KEY, slots INTEGER NOT NULL, last_seen REAL NOT NULL, static INTEGER NOT NULL DEFAULT 0)""",
]


@dataclass(frozen=True)
class SweepRow:
    name: str
    spec_yaml: str
    storage_url: str
    state: str
    created_at: float
    finished_at: float
    mlflow_run_id: str
    error: str


@dataclass(frozen=True)
class DispatchRow:
    sweep: str
    number: int
    attempt: int
    optuna_trial_id: int
    overrides: list[str]
    state: str
    worker: str
    worker_trial_id: str
    pruned: bool
    error: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class WorkerRow:
    address: str
    slots: int
    last_seen: float
    static: bool


class ControllerStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._lock = threading.RLock()

    def _rows(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            cursor = self._db.execute(sql, args)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _exec(self, sql: str, args: tuple = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    # sweeps
    def add_sweep(self, name: str, spec_yaml: str, storage_url: str) -> None:
        self._exec("INSERT INTO sweeps (name, spec_yaml, storage_url, state, created_at) VALUES (?, ?, ?, 'RUNNING', ?)",
                   (name, spec_yaml, storage_url, time.time()))

    def sweep(self, name: str) -> SweepRow | None:
        rows = self._rows("SELECT * FROM sweeps WHERE name = ?", (name,))
        return SweepRow(**rows[0]) if rows else None

    def sweeps(self, state: str | None = None) -> list[SweepRow]:
        if state:
            return [SweepRow(**r) for r in self._rows("SELECT * FROM sweeps WHERE state = ? ORDER BY created_at", (state,))]
        return [SweepRow(**r) for r in self._rows("SELECT * FROM sweeps ORDER BY created_at")]

    def update_sweep(self, name: str, **values) -> None:
        columns = ", ".join(f"{key} = ?" for key in values)
        self._exec(f"UPDATE sweeps SET {columns} WHERE name = ?", (*values.values(), name))

    # dispatches
    def add_dispatch(self, sweep: str, number: int, attempt: int, optuna_trial_id: int, overrides: list[str]) -> DispatchRow:
        now = time.time()
        worker_trial_id = f"{sweep}-{number:04d}-a{attempt}"
        self._exec("INSERT OR IGNORE INTO dispatches (sweep, number, attempt, optuna_trial_id, overrides, state, worker_trial_id,"
                   " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'QUEUED', ?, ?, ?)",
                   (sweep, number, attempt, optuna_trial_id, json.dumps(overrides), worker_trial_id, now, now))
        return self.dispatch(sweep, number, attempt)

    def dispatch(self, sweep: str, number: int, attempt: int) -> DispatchRow:
        rows = self._rows("SELECT * FROM dispatches WHERE sweep = ? AND number = ? AND attempt = ?", (sweep, number, attempt))
        return self._dispatch(rows[0])

    def dispatches(self, sweep: str | None = None, states: tuple[str, ...] | None = None) -> list[DispatchRow]:
        sql, args = "SELECT * FROM dispatches WHERE 1=1", []
        if sweep is not None:
            sql += " AND sweep = ?"
            args.append(sweep)
        if states:
            sql += f" AND state IN ({', '.join('?' for _ in states)})"
            args.extend(states)
        return [self._dispatch(r) for r in self._rows(sql + " ORDER BY number, attempt", tuple(args))]

    def update_dispatch(self, row: DispatchRow, **values) -> DispatchRow:
        values["updated_at"] = time.time()
        columns = ", ".join(f"{key} = ?" for key in values)
        self._exec(f"UPDATE dispatches SET {columns} WHERE sweep = ? AND number = ? AND attempt = ?",
                   (*values.values(), row.sweep, row.number, row.attempt))
        return self.dispatch(row.sweep, row.number, row.attempt)

    @staticmethod
    def _dispatch(row: dict) -> DispatchRow:
        row = dict(row, overrides=json.loads(row["overrides"]), pruned=bool(row["pruned"]))
        return DispatchRow(**row)

    # workers
    def upsert_worker(self, address: str, slots: int, static: bool = False) -> WorkerRow:
        self._exec("INSERT INTO workers (address, slots, last_seen, static) VALUES (?, ?, ?, ?) ON CONFLICT(address)"
                   " DO UPDATE SET slots = excluded.slots, last_seen = excluded.last_seen,"
                   " static = MAX(workers.static, excluded.static)", (address, slots, time.time(), int(static)))
        return self.workers(address)[0]

    def workers(self, address: str | None = None) -> list[WorkerRow]:
        if address:
            rows = self._rows("SELECT * FROM workers WHERE address = ?", (address,))
        else:
            rows = self._rows("SELECT * FROM workers ORDER BY address")
        return [WorkerRow(**dict(r, static=bool(r["static"]))) for r in rows]
