"""Reading a training run's ``events.jsonl`` and ``metrics.json`` without importing the trainer.

The training engine appends one JSON object per line and flushes; a reader may see the last line
half-written, so only complete lines (ending in a newline) are returned.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def read_new_lines(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of ``path`` after byte ``offset``; returns them and the new offset."""
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


def flatten_numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Nested dict -> {"a.b.c": float} for every finite number (bools excluded)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and math.isfinite(data):
        out[prefix] = float(data)
    return out


TASKS = ("spelling", "position", "count")


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


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/metrics.json`` as a dict, or None if the run has not written it (yet)."""
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def last_step(run_dir: Path) -> int:
    """Highest step mentioned in events.jsonl (0 if none)."""
    events, _ = read_new_lines(run_dir / "events.jsonl", 0)
    steps = [int(e["step"]) for e in events if isinstance(e.get("step"), (int, float))]
    return max(steps, default=0)
