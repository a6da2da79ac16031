"""The training run folder: its file names, the event and metrics.json schemas, one writer, one reader.

A run folder is what ``spelltransfer train --output-dir DIR`` and a packed member
(``spelltransfer.train.packed.job``) write, and what the trainer worker, the sweep controller
(through the worker) and the evaluation job read::

    DIR/config.yaml            the resolved training config (five sections inline)
    DIR/events.jsonl           one event a line, appended and flushed (EVENT_FIELDS)
    DIR/checkpoints/step-N/    atomic checkpoints (spelltransfer.train.checkpoints owns their inside)
    DIR/final/                 the PEFT adapter and tokenizer files
    DIR/metrics.json           the summary (METRICS_KEYS), written last and atomically
    DIR/validation_eval.json   the validation evaluation (packed member, or the worker's eval phase)
    DIR/tracking.json          tracker run ids, for resume (spelltransfer.track.CompositeTracker)
    DIR/CANCEL                 written by a follower: a packed member is dropped at its next step

A pack folder (``PackFolder``) holds ``pack.json`` (the members), ``state.pt`` (the whole pack's
checkpoint) and ``pack.log``. This module imports neither torch nor the trainer, so a service
can follow a run cheaply::

    writer = RunWriter("runs/a"); writer.emit("start", 0, backend="hf", device="cpu", max_steps=4)
    RunReader("runs/a").events()   # [{"event": "start", "step": 0, "time": ..., ...}]
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from spelltransfer.atomic import write_text_atomic

CONFIG_FILE = "config.yaml"
EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.json"
EVAL_FILE = "validation_eval.json"
TRACKING_FILE = "tracking.json"
CANCEL_FILE = "CANCEL"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
CHECKPOINT_GLOB = "step-*"

PACK_FILE = "pack.json"
PACK_STATE_FILE = "state.pt"
PACK_LOG_FILE = "pack.log"

# Event type -> the fields every such event carries (besides ``event``, ``step`` and ``time``).
# ``start`` may add resumed_from, precision, train/eval_examples, trainable_params, output_dir (and
# pack_id, pack_members when packed); ``done`` adds best_step and adapter unless it was cancelled.
# After a kill and resume, steps after the restored checkpoint appear again: a follower keeps the
# last line for each step.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "start": ("backend", "device", "max_steps"),
    "step": ("loss", "lr", "tokens"),
    "eval": ("metrics",),
    "checkpoint": ("path",),
    "done": ("reason",),
    "error": ("message",),
}
EVENT_TYPES = tuple(EVENT_FIELDS)

# metrics.json's keys, in order, the same for every engine: ``validation`` (the validation
# EvalResult) is null where the trainer does not evaluate (``spelltransfer train``: the worker's
# eval phase adds it), ``pack`` (pack id and members) null for a run trained alone.
METRICS_KEYS = ("stop", "final", "best", "adapter", "backend", "device", "base_model", "last_train_loss",
                "tokens_seen", "train_seconds_this_session", "resumed_from", "history", "plot", "validation", "pack")

# The evaluator's tasks (spelltransfer.evaluate.answers.TASKS), named here so that reading a
# run folder imports nothing of the evaluator; tests/test_run_folder.py checks they agree.
TASKS = ("spelling", "position", "count")


def _inside(name: str) -> property:
    return property(lambda self: self.root / name, doc=f"``ROOT/{name}``")


class RunFolder:
    """The paths inside one run folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    config = _inside(CONFIG_FILE)
    events = _inside(EVENTS_FILE)
    metrics = _inside(METRICS_FILE)
    validation_eval = _inside(EVAL_FILE)
    tracking = _inside(TRACKING_FILE)
    cancel = _inside(CANCEL_FILE)
    checkpoints = _inside(CHECKPOINTS_DIR)
    final = _inside(FINAL_DIR)


class PackFolder:
    """The paths inside one pack folder (the trainer worker's ``packs/<pack_id>/``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    manifest = _inside(PACK_FILE)
    state = _inside(PACK_STATE_FILE)
    log = _inside(PACK_LOG_FILE)


# ----------------------------------------------------------------------------- metrics.json


def metrics_summary(*, history: list[dict], stop_step: int, stop_reason: str, best_step: int | None,
                    metric_name: str, adapter_dir: Path, backend: str, device: str, base_model: str,
                    last_train_loss: float | None, tokens_seen: int, train_seconds: float,
                    resumed_from: int | None, plot_path: Path | None, validation: dict | None = None,
                    pack: dict | None = None) -> dict:
    """metrics.json of a finished run (keys METRICS_KEYS, whichever engine): ``history`` is its eval
    rows ``{"step", **metrics}`` (the last one is ``final``); ``best`` is the row of ``best_step``
    (None without early stopping); ``validation`` and ``pack`` a packed member's, else None."""
    best = best_metrics(history, best_step)
    summary = {
        "stop": {"step": stop_step, "reason": stop_reason},
        "final": {"step": history[-1]["step"], **final_metrics(history)},
        "best": {"step": best_step, "metric": metric_name, **best} if best_step else None,
        "adapter": {"path": str(adapter_dir), "from_step": best_step or stop_step},
        "backend": backend, "device": device, "base_model": base_model,
        "last_train_loss": last_train_loss, "tokens_seen": tokens_seen,
        "train_seconds_this_session": round(train_seconds, 2),
        "resumed_from": resumed_from, "history": history, "plot": str(plot_path) if plot_path else None,
        "validation": validation, "pack": pack,
    }
    return summary


def final_metrics(history: list[dict]) -> dict:
    """The last eval row's metrics, without its step."""
    return {k: v for k, v in history[-1].items() if k != "step"}


def best_metrics(history: list[dict], best_step: int | None) -> dict:
    """The metrics of the eval row at ``best_step`` ({} if none)."""
    row = next((h for h in history if h["step"] == best_step), {}) if best_step else {}
    return {k: v for k, v in row.items() if k != "step"}


def flatten_numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Nested dict -> {"a.b.c": float} for every finite number (bools excluded)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and math.isfinite(data):
        out[prefix] = float(data)
    return out


def accuracy_task(key: str) -> str | None:
    """The task a flattened metric key is the accuracy of, or None.

    Matches the spellings in use: ``spelling_accuracy``, ``tasks.spelling.accuracy`` (evaluation
    results), ``accuracy_spelling`` (the trainer's eval events), ``.../spelling/accuracy``.
    """
    lowered = key.lower()
    last = lowered.replace("/", ".").rsplit(".", 1)[-1]
    for task in TASKS:
        if last in (f"{task}_accuracy", f"accuracy_{task}") or lowered.endswith((f"{task}.accuracy", f"{task}/accuracy")):
            return task
    return None


def item_count_task(key: str) -> str | None:
    """The task a flattened validation key counts the evaluated items of (``validation.tasks.count.n``,
    ``validation/count_n``), or None."""
    lowered = key.lower().replace("/", ".")
    if not lowered.startswith("validation."):
        return None
    for task in TASKS:
        if lowered.endswith((f".{task}.n", f".{task}_n")):
            return task
    return None


# ----------------------------------------------------------------------------- writer


class RunWriter:
    """What a training process writes into its run folder: config.yaml, events, metrics.json.

    Each event line is fsynced, except event types listed in ``flush_only`` (flushed only):
    ``flush_only=("step",)`` is for a process logging many runs' steps at once (the pack job), where
    K fsyncs per step would dominate a GPU step and a lost ``step`` line is logged again on resume.
    """

    def __init__(self, root: str | os.PathLike, on_event: Callable[[dict], None] | None = None,
                 flush_only: tuple[str, ...] = ()):
        self.folder = RunFolder(root)
        self.on_event = on_event
        self.flush_only = frozenset(flush_only)
        self.folder.root.mkdir(parents=True, exist_ok=True)
        self._handle = self.folder.events.open("a", encoding="utf-8")

    def write_config(self, text: str) -> Path:
        return write_text_atomic(self.folder.config, text, fsync=False)

    def emit(self, event: str, step: int, **fields) -> dict:
        if event not in EVENT_FIELDS:
            raise ValueError(f"unknown event type {event!r} (one of {', '.join(EVENT_TYPES)})")
        missing = [name for name in EVENT_FIELDS[event] if name not in fields]
        if missing:
            raise ValueError(f"{event} event: missing {', '.join(missing)}")
        record = {"event": event, "step": step, "time": round(time.time(), 3), **fields}
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        if event not in self.flush_only:
            os.fsync(self._handle.fileno())
        if self.on_event is not None:
            self.on_event(record)
        return record

    def write_metrics(self, summary: dict, fsync: bool = True) -> Path:
        """metrics.json, atomically: a reader sees all of it or none (the worker takes it as 'finished')."""
        return write_text_atomic(self.folder.metrics, json.dumps(summary, indent=1), fsync=fsync)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def request_cancel(root: str | os.PathLike) -> None:
    """Ask the (packed) process training this run to drop it at its next step."""
    folder = RunFolder(root)
    folder.root.mkdir(parents=True, exist_ok=True)
    folder.cancel.touch()


# ----------------------------------------------------------------------------- reader


def read_new_lines(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of ``path`` after byte ``offset``; returns them and the new offset.

    The writer may be mid-line, so only lines ending in a newline count; a line that is not a JSON
    object comes back as ``{"event": "unparsed", "raw": ...}``.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for raw in chunk[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except json.JSONDecodeError:
            event = {"event": "unparsed", "raw": raw.decode(errors="replace")}
        events.append(event if isinstance(event, dict) else {"event": "unparsed", "raw": event})
    return events, offset + end + 1


def read_events(path: Path) -> list[dict]:
    """All complete events of an events file (a torn last line from a kill is ignored, so are
    lines that are not JSON objects)."""
    return [e for e in read_new_lines(path, 0)[0] if e.get("event") != "unparsed"]


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class RunReader:
    """What a follower reads from a run folder; every method tolerates a run still being written."""

    def __init__(self, root: str | os.PathLike):
        self.folder = RunFolder(root)

    def events(self) -> list[dict]:
        return read_events(self.folder.events)

    def new_events(self, offset: int) -> tuple[list[dict], int]:
        """Complete events after byte ``offset`` of events.jsonl, and the offset to continue from."""
        return read_new_lines(self.folder.events, offset)

    def last_event(self) -> dict | None:
        events = self.events()
        return events[-1] if events else None

    def last_step(self) -> int:
        """Highest step mentioned in events.jsonl (0 if none)."""
        steps = [int(e["step"]) for e in self.new_events(0)[0] if isinstance(e.get("step"), (int, float))]
        return max(steps, default=0)

    def metrics(self) -> dict | None:
        """metrics.json as a dict, or None if the run has not written it (yet)."""
        try:
            return json.loads(self.folder.metrics.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def finished(self) -> bool:
        return self.folder.metrics.is_file()

    def validation_eval(self) -> dict | None:
        return _read_json(self.folder.validation_eval)

    def tracking_run_ids(self) -> dict[str, str]:
        """The trainer's tracker run ids (``{"mlflow": ..., "wandb": ...}``)."""
        ids = _read_json(self.folder.tracking) or {}
        return {str(k): str(v) for k, v in ids.items() if isinstance(v, str) and v}

    def cancel_requested(self) -> bool:
        return self.folder.cancel.exists()

    def has_checkpoints(self) -> bool:
        return any(self.folder.checkpoints.glob(CHECKPOINT_GLOB))
