"""The trainer worker's engine: run training trials as ``spelltransfer train`` subprocesses.

State (trials, their process group, how often they were launched) lives in ``WORK_DIR/worker.db``
(SQLite), written before anything is started. After a restart — even after ``kill -9`` of the
worker, which also kills its training children through ``PR_SET_PDEATHSIG`` — every trial that
was running is launched again with ``--resume`` and continues from its last checkpoint.

One supervisor thread owns all child processes (it launches, polls and stops them); RPC threads
only read and write the table. ``slots`` trials run at once; more are refused with
``ResourceExhaustedError`` so the controller can place them elsewhere.

Run folders: ``WORK_DIR/runs/<trial_id>/`` (``spelltransfer.run_folder``: what the trainer writes
and this worker reads), with the child's stdout+stderr in ``WORK_DIR/runs/<trial_id>.log``.

Pack mode (``pack_size`` P > 1): pending training trials whose configs may share one base model
(``spelltransfer.train.packed.job.pack_key``) start together as one pack process -- up to
min(P, free slots) of them, once that many are pending or the oldest has waited ``pack_wait_s``
(the controller's StartTrial calls for K free slots arrive within moments of each other). A
pack of one, and a config that cannot be packed, run alone as before. The pack's folder is
``WORK_DIR/packs/<pack_id>/`` (``pack.json``, ``state.pt``, ``pack.log``); each member keeps its
own run folder, and is SUCCEEDED as soon as its ``metrics.json`` and ``done`` line appear, while
the pack trains on for the others. Slots still count trials. Cancelling a member writes
``runs/<trial_id>/CANCEL`` (the pack drops it at its next step). After a restart the members that
were running go back to PENDING with their ``pack_id`` and the same pack is relaunched, with
``--resume`` once it has saved a state.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from spelltransfer.atomic import write_text_atomic
from spelltransfer.errors import ConfigError
from spelltransfer.platform import limits, process
from spelltransfer.platform.errors import NotFoundError, ResourceExhaustedError
from spelltransfer.platform.roots import ServiceRoots
from spelltransfer.run_folder import (CANCEL_FILE as PACK_CANCEL_FILE, PACK_STATE_FILE, TASKS,  # noqa: F401
                                      PackFolder, RunFolder, RunReader, accuracy_task, flatten_numbers, request_cancel)

log = logging.getLogger(__name__)

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
EVALUATE_MODES = ("auto", "always", "never")
TRIAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CANCEL_GRACE_S = 5.0
# A trial whose process cannot be started (the kernel refuses its command line, its log cannot be
# opened) is tried this many times, START_RETRY_S apart, then FAILED with the reason.
MAX_START_ATTEMPTS = 3
START_RETRY_S = 0.5
SWEEP_JOB_TYPES = {"train": "train", "eval": "validation"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
  trial_id TEXT PRIMARY KEY, state TEXT NOT NULL, config_path TEXT NOT NULL, overrides TEXT NOT NULL,
  labels TEXT NOT NULL, output_dir TEXT NOT NULL, launches INTEGER NOT NULL DEFAULT 0, pgid INTEGER,
  cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', stop_reason TEXT NOT NULL DEFAULT '',
  last_step INTEGER NOT NULL DEFAULT 0, metrics_json TEXT NOT NULL DEFAULT '',
  evaluate TEXT NOT NULL DEFAULT 'auto', phase TEXT NOT NULL DEFAULT 'train',
  created_at REAL NOT NULL, updated_at REAL NOT NULL)
"""
# Columns added after the first release, added to existing worker.db files on open (name, definition).
_MIGRATIONS = (
    ("pack_id", "TEXT NOT NULL DEFAULT ''"),    # the pack a trial trains in ('' = alone)
    ("pack_key", "TEXT NOT NULL DEFAULT ''"),   # which trials may share a pack ('' = none may)
)
PACKS_DIR = "packs"


@dataclass(frozen=True)
class TrialRecord:
    """One row of the worker's trial table."""

    trial_id: str
    state: str
    config_path: str
    overrides: list[str]
    labels: dict[str, str]
    output_dir: str
    launches: int
    pgid: int | None
    cancel_requested: bool
    error: str
    stop_reason: str
    last_step: int
    metrics_json: str
    evaluate: str
    phase: str
    created_at: float
    updated_at: float
    pack_id: str = ""
    pack_key: str = ""

    @property
    def metrics(self) -> dict[str, float]:
        return flatten_numbers(json.loads(self.metrics_json)) if self.metrics_json else {}

    @property
    def tracking_run_ids(self) -> dict[str, str]:
        """The trainer's tracker run ids (``{"mlflow": ..., "wandb": ...}``) from ``tracking.json``."""
        return RunReader(self.output_dir).tracking_run_ids()


@dataclass
class _Child:
    popen: subprocess.Popen
    cancel_sent_at: float | None = None
    offset: int = 0  # bytes of events.jsonl already read for last_step


@dataclass
class _Pack:
    """One pack process and the members it is still training for this worker."""

    popen: subprocess.Popen
    pack_dir: Path
    members: set[str]
    offsets: dict[str, int]        # per member: bytes of events.jsonl already read
    done_seen: set[str]            # members whose events.jsonl has a ``done`` line


def default_train_command(config_path: str, overrides: list[str], output_dir: str, resume: bool) -> list[str]:
    # `python -m spelltransfer.train` = `spelltransfer train`, importing Unsloth first when it is used.
    argv = [sys.executable, "-m", "spelltransfer.train", "--config", config_path, "--output-dir", output_dir]
    for assignment in overrides:
        argv += ["--set", assignment]
    return argv + (["--resume"] if resume else [])


def default_eval_command(run_dir: str, out: str) -> list[str]:
    """Evaluate ``run_dir/final`` on validation with the run's model, data and eval settings."""
    return [sys.executable, "-m", "spelltransfer.platform.eval_job", "--run-dir", run_dir, "--out", out]


def default_validate(config_path: str, overrides: list[str]):
    """Reject a bad config before anything starts (ConfigError names the field); returns the config,
    whose paths the worker then checks against its roots."""
    from spelltransfer.train.config import load_training_config

    return load_training_config(config_path, list(overrides))


def resolved_config(text: str):
    """A resolved training config sent as YAML (``StartTrial.config_yaml``), validated by ``RunConfig``;
    ConfigError names the field."""
    from spelltransfer.safe_yaml import load_yaml
    from spelltransfer.train.config import validate_config

    merged = load_yaml(text, source="config_yaml")
    if not isinstance(merged, dict):
        raise ConfigError(f"config_yaml: expected a mapping of config sections (got {type(merged).__name__})")
    return validate_config(merged, source="config_yaml")


def default_pack_command(pack_dir: str, resume: bool) -> list[str]:
    """Train the members listed in ``pack_dir/pack.json`` as one process (spelltransfer.train.packed.job)."""
    argv = [sys.executable, "-m", "spelltransfer.train.packed.job", "--pack-dir", pack_dir]
    return argv + (["--resume"] if resume else [])


def default_pack_key(config_path: str, overrides: list[str]) -> str | None:
    """Trials with equal keys may train in one pack; None = this config trains alone."""
    from spelltransfer.train.config import load_training_config
    from spelltransfer.train.packed.job import pack_key

    return pack_key(load_training_config(config_path, list(overrides)))


class TrainerWorker:
    """Accept, run, follow and cancel training trials; survive restarts."""

    def __init__(self, work_dir: str | Path, slots: int = 1,
                 train_command: Callable[[str, list[str], str, bool], list[str]] = default_train_command,
                 validate: Callable[[str, list[str]], None] = default_validate,
                 eval_command: Callable[[str, str], list[str]] = default_eval_command,
                 poll_s: float = 0.2, pack_size: int = 1, pack_wait_s: float = 2.0,
                 pack_command: Callable[[str, bool], list[str]] = default_pack_command,
                 pack_key: Callable[[str, list[str]], str | None] = default_pack_key,
                 roots: ServiceRoots | None = None):
        if slots < 1:
            raise ConfigError(f"slots: must be >= 1 (got {slots})")
        if pack_size < 1:
            raise ConfigError(f"pack_size: must be >= 1 (got {pack_size})")
        if pack_wait_s < 0:
            raise ConfigError(f"pack_wait_s: must be >= 0 (got {pack_wait_s})")
        self.pack_size, self.pack_wait_s = pack_size, pack_wait_s
        self._pack_command, self._pack_key = pack_command, pack_key
        self._packs: dict[str, _Pack] = {}
        if pack_size > 1:
            import spelltransfer.train.packed.job  # noqa: F401  (torch: imported now, not in the first StartTrial)
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # Requests may name paths under the roots (configs, data, results) and in this worker's folder.
        self.roots = (roots or ServiceRoots.from_env()).adding(data=[self.work_dir], results=[self.work_dir])
        self._start_failures: dict[str, tuple[int, float]] = {}  # trial or pack id -> (failed starts, retry at)
        self.slots = slots
        self._train_command = train_command
        self._validate = validate
        self._eval_command = eval_command
        self._poll_s = poll_s
        self._db = sqlite3.connect(self.work_dir / "worker.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._migrate()
        self._columns = [d[0] for d in self._db.execute("SELECT * FROM trials LIMIT 0").description]
        self._lock = threading.RLock()
        self._children: dict[str, _Child] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._recover()
        self._supervisor = threading.Thread(target=self._supervise, name="trainer-supervisor", daemon=True)
        self._supervisor.start()

    # ---- requests (called from RPC threads) ----

    def start_trial(self, trial_id: str, config_path: str, overrides: list[str],
                    labels: dict[str, str] | None = None, evaluate: str = "auto", config_yaml: str = "") -> TrialRecord:
        """Accept a trial; the same ``trial_id`` again returns the existing one (never a second run).

        The config is a file on this worker (``config_path`` + ``overrides``) or the resolved config
        itself (``config_yaml``), which is validated, checked against the roots and written to
        ``WORK_DIR/configs/TRIAL_ID.yaml``; from there on both are a config path."""
        evaluate = evaluate or "auto"
        if evaluate not in EVALUATE_MODES:
            raise ConfigError(f"evaluate: must be one of {', '.join(EVALUATE_MODES)} (got {evaluate!r})")
        if not TRIAL_ID.match(trial_id or ""):
            raise ConfigError(f"trial_id: must match {TRIAL_ID.pattern} (got {trial_id!r})")
        if config_yaml:
            if config_path or overrides:
                raise ConfigError("config_yaml: give the resolved config alone, without config_path or overrides")
            limits.check_text("config_yaml", config_yaml, limits.MAX_SPEC_BYTES)
        elif not config_path:
            raise ConfigError("config_path: required (a training config YAML on the worker, or config_yaml)")
        limits.check_text("config_path", config_path, limits.MAX_PATH_BYTES)
        limits.check_overrides("overrides", overrides)
        limits.check_labels("labels", dict(labels or {}))
        with self._lock:
            existing = self._get(trial_id)
            if existing is not None:
                return existing
            if config_yaml:
                config = resolved_config(config_yaml)
                self.roots.check_run_config(config)  # before anything is written
                config_path = str(self._write_config(trial_id, config))
            else:
                self.roots.check("configs", "config_path", config_path)  # before the file is opened
                config = self._validate(config_path, list(overrides))
                if config is not None:
                    self.roots.check_run_config(config)
            if self._busy() >= self.slots:
                raise ResourceExhaustedError(f"worker busy: {self.slots} slot(s), all running trials")
            key = (self._pack_key(config_path, list(overrides)) or "") if self.pack_size > 1 else ""
            now = time.time()
            output_dir = str(self.work_dir / "runs" / trial_id)
            self._db.execute(
                "INSERT INTO trials (trial_id, state, config_path, overrides, labels, output_dir, evaluate,"
                " created_at, updated_at, pack_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trial_id, PENDING, str(Path(config_path).resolve()), json.dumps(list(overrides)),
                 json.dumps(dict(labels or {})), output_dir, evaluate, now, now, key))
        self._wake.set()
        return self.get_trial(trial_id)

    def _write_config(self, trial_id: str, config) -> Path:
        path = self.work_dir / "configs" / f"{trial_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, config.to_yaml())
        return path

    def get_trial(self, trial_id: str) -> TrialRecord:
        with self._lock:
            record = self._get(trial_id)
        if record is None:
            raise NotFoundError(f"trial_id: no trial {trial_id!r} on this worker")
        return record

    def list_trials(self, active_only: bool = False) -> list[TrialRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM trials ORDER BY created_at").fetchall()
        records = [self._record(row) for row in rows]
        return [r for r in records if r.state not in TERMINAL] if active_only else records

    def cancel_trial(self, trial_id: str) -> TrialRecord:
        with self._lock:
            record = self.get_trial(trial_id)
            if record.state in TERMINAL:
                return record
            if record.pack_id and record.phase == "train":
                # The pack process drops it at its next step; the others train on.
                request_cancel(record.output_dir)
                self._update(trial_id, state=CANCELLED, stop_reason="cancelled", cancel_requested=1)
            elif record.state == PENDING and trial_id not in self._children:
                self._update(trial_id, state=CANCELLED, stop_reason="cancelled", cancel_requested=1)
            else:
                self._update(trial_id, cancel_requested=1)
        self._wake.set()
        return self.get_trial(trial_id)

    def info(self) -> dict:
        active = [r.trial_id for r in self.list_trials(active_only=True)]
        return {"slots": self.slots, "busy": len(active), "active_trial_ids": active, "work_dir": str(self.work_dir)}

    def watch(self, trial_id: str, from_line: int = 0, is_active: Callable[[], bool] = lambda: True,
              poll_s: float = 0.2) -> Iterator[tuple[int, dict]]:
        """Yield ``(line_number, event)`` from events.jsonl as written, then ``(0, {"event": "state"})``
        once the trial is finished and every line has been read."""
        reader = RunReader(self.get_trial(trial_id).output_dir)
        offset, line = 0, 0
        while is_active():
            finished = self.get_trial(trial_id).state in TERMINAL  # read state *before* the file
            events, offset = reader.new_events(offset)
            for event in events:
                line += 1
                if line > from_line:
                    yield line, event
            if finished and not events:
                final = self.get_trial(trial_id)
                yield 0, {"event": "state", "state": final.state, "step": final.last_step,
                          "reason": final.stop_reason or final.error}
                return
            time.sleep(poll_s)

    def close(self, stop_children: bool = True) -> None:
        """Stop the supervisor (and, by default, the running children; they resume on next start)."""
        self._stop.set()
        self._wake.set()
        self._supervisor.join(timeout=10)
        if stop_children:
            for child in list(self._children.values()) + list(self._packs.values()):
                process.stop_group(child.popen.pid, grace_s=CANCEL_GRACE_S)
                child.popen.wait()

    # ---- supervisor thread: the only one that touches child processes ----

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # keep supervising; the error is in the log
                log.exception("trainer supervisor tick failed")
            self._wake.wait(self._poll_s)
            self._wake.clear()

    def _tick(self) -> None:
        for trial_id, child in list(self._children.items()):
            record = self.get_trial(trial_id)
            if record.cancel_requested:
                self._signal_cancel(child)
            if child.popen.poll() is not None:
                del self._children[trial_id]
                self._finish(record, child.popen.returncode)
            else:
                _, child.offset = self._follow(record, child.offset)
        self._tick_packs()
        for record in self.list_trials(active_only=True):
            if record.trial_id in self._children or self._in_pack(record.trial_id) or self._running() >= self.slots:
                continue
            if record.cancel_requested:
                self._update(record.trial_id, state=CANCELLED, stop_reason="cancelled")
                continue
            if self._packable(record):
                continue  # started by _launch_packs, with others
            self._try_start([record.trial_id], lambda record=record: self._launch(record))
        self._launch_packs()

    def _try_start(self, trial_ids: list[str], start: Callable[[], None], key: str | None = None) -> None:
        """Run ``start``; when it raises, count a failed start of ``key`` (default: the one trial) and,
        after ``MAX_START_ATTEMPTS``, fail every trial of ``trial_ids`` with the reason."""
        key = key or trial_ids[0]
        failures, retry_at = self._start_failures.get(key, (0, 0.0))
        if time.monotonic() < retry_at:
            return
        try:
            start()
        except Exception as error:  # noqa: BLE001 - recorded on the trial, not lost in a loop
            failures += 1
            reason = str(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
            reason = reason[:1000]
            if failures < MAX_START_ATTEMPTS:
                log.warning("%s: start %d of %d failed: %s", key, failures, MAX_START_ATTEMPTS, reason)
                self._start_failures[key] = (failures, time.monotonic() + START_RETRY_S)
                return
            self._start_failures.pop(key, None)
            log.error("%s: could not start (%d attempts): %s", key, failures, reason)
            for trial_id in trial_ids:
                self._update(trial_id, state=FAILED, pgid=None,
                             error=f"could not start the trial's process ({failures} attempts): {reason}")
            return
        self._start_failures.pop(key, None)

    def _launch(self, record: TrialRecord) -> None:
        output_dir = Path(record.output_dir)
        if record.phase == "eval":
            argv = self._eval_command(str(output_dir), str(RunFolder(output_dir).validation_eval))
            resume = False
        else:
            resume = RunReader(output_dir).has_checkpoints()
            argv = self._train_command(record.config_path, record.overrides, str(output_dir), resume)
        popen = process.spawn(argv, output_dir.parent / f"{record.trial_id}.log", env=_child_env(record))
        self._children[record.trial_id] = _Child(popen)
        launches = record.launches + (0 if record.phase == "eval" else 1)  # counts training processes only
        self._update(record.trial_id, state=RUNNING, pgid=popen.pid, launches=launches)
        log.info("trial %s: %s pid %d (%s)", record.trial_id, record.phase, popen.pid, "resume" if resume else "fresh")

    def _signal_cancel(self, child: _Child) -> None:
        import signal

        now = time.monotonic()
        if child.cancel_sent_at is None:
            child.cancel_sent_at = now
            process.signal_group(child.popen.pid, signal.SIGTERM)
        elif now - child.cancel_sent_at > CANCEL_GRACE_S:
            process.signal_group(child.popen.pid, signal.SIGKILL)

    def _follow(self, record: TrialRecord, offset: int) -> tuple[list[dict], int]:
        """New lines of the trial's events.jsonl after byte ``offset``; keeps ``last_step`` current."""
        events, offset = RunReader(record.output_dir).new_events(offset)
        steps = [int(e["step"]) for e in events if isinstance(e.get("step"), (int, float))]
        if steps and max(steps) != record.last_step:
            self._update(record.trial_id, last_step=max(steps))
        return events, offset

    def _finish(self, record: TrialRecord, returncode: int, log_path: Path | None = None) -> None:
        """Record how a trial's process ended; ``log_path``: its output when not ``runs/<id>.log`` (a pack's)."""
        output_dir = Path(record.output_dir)
        reader = RunReader(output_dir)
        metrics = reader.metrics()
        step = reader.last_step()
        if record.cancel_requested:
            self._update(record.trial_id, state=CANCELLED, stop_reason="cancelled", last_step=step, pgid=None)
        elif record.phase == "eval":
            result = reader.validation_eval()
            if returncode == 0 and result is not None and metrics is not None:
                merged = dict(metrics, validation=result)
                self._update(record.trial_id, state=SUCCEEDED, metrics_json=json.dumps(merged), pgid=None)
            else:
                error = self._error_message(output_dir, record.trial_id, returncode, metrics, log_path)
                self._update(record.trial_id, state=FAILED, error=f"validation evaluation failed: {error}", pgid=None)
        elif returncode == 0 and metrics is not None and self._needs_eval(record, metrics):
            # Training done; the supervisor launches the evaluation next (and again after a restart).
            stop = metrics.get("stop") if isinstance(metrics.get("stop"), dict) else {}
            self._update(record.trial_id, phase="eval", stop_reason=str(stop.get("reason") or "done"),
                         last_step=int(stop.get("step") or step), metrics_json=json.dumps(metrics), pgid=None)
            self._wake.set()
            return
        elif returncode == 0 and metrics is not None:
            stop = metrics.get("stop") if isinstance(metrics.get("stop"), dict) else {}
            reason = str(stop.get("reason") or metrics.get("stop_reason") or "done")
            stop_step = stop.get("step") or metrics.get("stop_step") or step
            self._update(record.trial_id, state=SUCCEEDED, stop_reason=reason, metrics_json=json.dumps(metrics),
                         last_step=int(stop_step), pgid=None)
        else:
            error = self._error_message(output_dir, record.trial_id, returncode, metrics, log_path)
            self._update(record.trial_id, state=FAILED, error=error, last_step=step, pgid=None)
        log.info("trial %s: finished (exit %s)", record.trial_id, returncode)

    @staticmethod
    def _needs_eval(record: TrialRecord, metrics: dict) -> bool:
        if record.evaluate == "never":
            return False
        if record.evaluate == "always":
            return True
        found = {accuracy_task(key) for key in flatten_numbers(metrics)}
        return not all(task in found for task in TASKS)

    def _error_message(self, output_dir: Path, trial_id: str, returncode: int, metrics: dict | None,
                       log_path: Path | None = None) -> str:
        events, _ = RunReader(output_dir).new_events(0)
        errors = [e for e in events if e.get("event") == "error"]
        if errors:
            return f"exit {returncode}: {errors[-1].get('message') or errors[-1].get('error') or errors[-1]}"
        if returncode == 0 and metrics is None:
            return "exit 0 but no metrics.json was written"
        log_path = log_path or output_dir.parent / f"{trial_id}.log"
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        return f"exit {returncode}: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}"

    # ---- packs (supervisor thread) ----

    def _running(self) -> int:
        """Trials occupying a slot now: lone children plus every pack's unfinished members."""
        return len(self._children) + sum(len(pack.members) for pack in self._packs.values())

    def _in_pack(self, trial_id: str) -> bool:
        return any(trial_id in pack.members for pack in self._packs.values())

    def _packable(self, record: TrialRecord) -> bool:
        """Trains in a pack: already assigned to one (a relaunch), or pack mode and a pack key."""
        return record.phase == "train" and bool(record.pack_id or (self.pack_size > 1 and record.pack_key))

    def _pack_dir(self, pack_id: str) -> Path:
        return self.work_dir / PACKS_DIR / pack_id

    def _launch_packs(self) -> None:
        """Relaunch packs interrupted by a restart, then start new packs of compatible pending trials."""
        pending = [r for r in self.list_trials(active_only=True)
                   if r.state == PENDING and not r.cancel_requested and self._packable(r)
                   and r.trial_id not in self._children and not self._in_pack(r.trial_id)]
        interrupted: dict[str, list[TrialRecord]] = {}
        fresh: dict[str, list[TrialRecord]] = {}
        for record in pending:
            if record.pack_id:
                interrupted.setdefault(record.pack_id, []).append(record)
            else:
                fresh.setdefault(record.pack_key, []).append(record)
        for pack_id, members in interrupted.items():
            if pack_id in self._packs or (self._running() and self._running() + len(members) > self.slots):
                continue
            self._try_start([r.trial_id for r in members], lambda: self._launch_pack(pack_id, members), key=pack_id)
        for group in sorted(fresh.values(), key=lambda g: g[0].created_at):
            free = self.slots - self._running()
            if free <= 0:
                break
            want = min(self.pack_size, free)
            if len(group) < want and time.time() - group[0].created_at < self.pack_wait_s:
                continue  # wait a moment for the rest of the pack
            members = group[:want]
            if len(members) == 1:  # a pack of one trains alone, the ordinary way
                self._try_start([members[0].trial_id], lambda: self._launch(members[0]))
            else:
                pack_id = f"pack-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
                # Once assigned, the members are an interrupted pack: a failed start is retried there.
                self._try_start([r.trial_id for r in members], lambda: self._launch_pack(pack_id, members), key=pack_id)

    def _launch_pack(self, pack_id: str, to_run: list[TrialRecord]) -> None:
        """Start (or restart) one pack process for ``to_run``; the table says so before it starts."""
        from spelltransfer.train.packed.job import PackManifest, PackMember, write_manifest

        with self._lock:  # against cancel_trial: a member is either cancelled before joining, or gets a CANCEL file
            to_run = [r for r in (self._get(r.trial_id) for r in to_run)
                      if r is not None and r.state == PENDING and not r.cancel_requested]
            if not to_run:
                return
            for record in to_run:
                if record.pack_id != pack_id:
                    self._update(record.trial_id, pack_id=pack_id)
            rows = self._db.execute("SELECT * FROM trials WHERE pack_id = ?", (pack_id,)).fetchall()
        # Every member ever in the pack, in a fixed order: a relaunch must list the same trials in the
        # same order as the saved state (finished and cancelled members are skipped by the job).
        everyone = sorted((self._record(row) for row in rows), key=lambda r: (r.created_at, r.trial_id))
        pack_dir = self._pack_dir(pack_id)
        write_manifest(pack_dir, PackManifest(pack_id=pack_id, members=[
            PackMember(trial_id=r.trial_id, config_path=r.config_path, overrides=r.overrides, output_dir=r.output_dir)
            for r in everyone]))
        resume = PackFolder(pack_dir).state.is_file()
        popen = process.spawn(self._pack_command(str(pack_dir), resume), PackFolder(pack_dir).log,
                              env=_child_env(to_run[0]))
        self._packs[pack_id] = _Pack(popen, pack_dir, {r.trial_id for r in to_run}, {}, set())
        with self._lock:
            for record in to_run:  # a member cancelled meanwhile stays CANCELLED (the pack drops it)
                self._db.execute("UPDATE trials SET state = ?, pgid = ?, launches = launches + 1, updated_at = ?"
                                 " WHERE trial_id = ? AND state = ?", (RUNNING, popen.pid, time.time(), record.trial_id,
                                                                     PENDING))
        log.info("pack %s: %d trial(s) %s, pid %d (%s)", pack_id, len(to_run), ", ".join(r.trial_id for r in to_run),
                 popen.pid, "resume" if resume else "fresh")

    def _tick_packs(self) -> None:
        """Finish members whose metrics.json and ``done`` line appeared; when a pack exits, the rest."""
        for pack_id, pack in list(self._packs.items()):
            for trial_id in sorted(pack.members):
                record = self.get_trial(trial_id)
                if record.state in TERMINAL:  # cancelled meanwhile: the pack drops it on its own
                    pack.members.discard(trial_id)
                    continue
                events, pack.offsets[trial_id] = self._follow(record, pack.offsets.get(trial_id, 0))
                if any(e.get("event") == "done" for e in events):
                    pack.done_seen.add(trial_id)
                if trial_id in pack.done_seen and RunReader(record.output_dir).finished():
                    pack.members.discard(trial_id)
                    self._finish(self.get_trial(trial_id), 0)
            if pack.popen.poll() is None:
                continue
            del self._packs[pack_id]
            for trial_id in sorted(pack.members):
                record = self.get_trial(trial_id)
                if record.state not in TERMINAL:
                    self._finish(record, pack.popen.returncode, log_path=PackFolder(pack.pack_dir).log)
            log.info("pack %s: exited with %s", pack_id, pack.popen.returncode)

    # ---- restart recovery ----

    def _recover(self) -> None:
        """Trials that were running when the worker died go back to PENDING and resume."""
        for record in self.list_trials(active_only=True):
            # A packed member's process is its pack's: its command line names the pack folder.
            marker = str(self._pack_dir(record.pack_id)) if record.pack_id and record.phase == "train" else record.output_dir
            if record.pgid and process.group_alive(record.pgid) and marker in process.cmdline(record.pgid):
                log.warning("trial %s: stopping orphaned process group %d", record.trial_id, record.pgid)
                process.stop_group(record.pgid, grace_s=2.0)
            if record.state == RUNNING:
                self._update(record.trial_id, state=PENDING, pgid=None)

    # ---- table helpers ----

    def _migrate(self) -> None:
        """Add the columns a worker.db from an older release lacks (values: their defaults)."""
        present = {row[1] for row in self._db.execute("PRAGMA table_info(trials)")}
        for name, definition in _MIGRATIONS:
            if name not in present:
                self._db.execute(f"ALTER TABLE trials ADD COLUMN {name} {definition}")

    def _busy(self) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM trials WHERE state IN (?, ?)", (PENDING, RUNNING)).fetchone()[0]

    def _get(self, trial_id: str) -> TrialRecord | None:
        row = self._db.execute("SELECT * FROM trials WHERE trial_id = ?", (trial_id,)).fetchone()
        return self._record(row) if row else None

    def _update(self, trial_id: str, **values) -> None:
        values["updated_at"] = time.time()
        columns = ", ".join(f"{key} = ?" for key in values)
        with self._lock:
            self._db.execute(f"UPDATE trials SET {columns} WHERE trial_id = ?", (*values.values(), trial_id))

    def _record(self, row: tuple) -> TrialRecord:
        data = dict(zip(self._columns, row))
        data["overrides"] = json.loads(data["overrides"])
        data["labels"] = json.loads(data["labels"])
        data["cancel_requested"] = bool(data["cancel_requested"])
        return TrialRecord(**data)


def _child_env(record: TrialRecord) -> dict[str, str]:
    """The worker's environment, plus W&B's grouping: runs of one sweep share ``WANDB_RUN_GROUP``."""
    env = dict(os.environ)
    sweep = record.labels.get("sweep")
    if sweep:
        env["WANDB_RUN_GROUP"] = sweep
        env["WANDB_JOB_TYPE"] = SWEEP_JOB_TYPES.get(record.phase, record.phase)
    return env
