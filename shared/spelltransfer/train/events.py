"""``DIR/events.jsonl``: the run's progress as one JSON object a line, appended and flushed.

Services follow a run by tailing this file (they never import the trainer). Events:
``start`` (``resumed_from`` when resuming), ``step`` {step, loss, lr, tokens}, ``eval``
{step, metrics}, ``checkpoint`` {step, path}, ``done`` {reason, step}, ``error`` {message}.
After a kill and ``--resume``, steps after the restored checkpoint appear again: a follower
keeps the last line for each step.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

EVENT_TYPES = ("start", "step", "eval", "checkpoint", "done", "error")


class EventLog:
    """Appends events; each line is fsynced, except event types listed in ``flush_only`` (flushed).

    ``flush_only=("step",)`` is for a process logging many runs' steps at once (the pack job): K
    fsyncs per step would dominate a GPU step, and a lost ``step`` line is logged again on resume.
    """

    def __init__(self, path: Path, on_event: Callable[[dict], None] | None = None, flush_only: tuple[str, ...] = ()):
        self.path = path
        self.on_event = on_event
        self.flush_only = frozenset(flush_only)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def emit(self, event: str, step: int, **fields) -> dict:
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event!r}")
        record = {"event": event, "step": step, "time": round(time.time(), 3), **fields}
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        if event not in self.flush_only:
            os.fsync(self._handle.fileno())
        if self.on_event is not None:
            self.on_event(record)
        return record

    def close(self) -> None:
        self._handle.close()


def read_events(path: Path) -> list[dict]:
    """All complete events (a torn last line from a kill is ignored)."""
    events = []
    if not path.is_file():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
