"""The study's own questions for load tests and API evaluation.

From a dataset folder (``spelltransfer data build``) when one is given, else rebuilt on the spot
from the task classes (``spelltransfer.data.tasks``) over a fixed word list, so a load test needs
no prepared data. Tasks are interleaved so every slice of the list mixes spelling, position and
count questions (their prompts and answers differ in length, and so does their cost).
"""

from __future__ import annotations

import json
from pathlib import Path

from spelltransfer.errors import DataError

# Words outside any training split would be better; these only need to be ordinary English words.
FALLBACK_WORDS = (
    "garden", "window", "planet", "orange", "silver", "market", "pencil", "bottle", "forest", "rabbit",
    "candle", "mirror", "ticket", "bridge", "winter", "summer", "castle", "dragon", "jungle", "pocket",
    "button", "marble", "rocket", "saddle", "thunder", "velvet", "whistle", "yellow", "zipper", "anchor",
    "blanket", "cabbage", "dolphin", "eagle", "feather", "guitar", "hammer", "island", "jacket", "kitten",
)


def _interleave(per_task: dict[str, list[dict]], n: int) -> list[dict]:
    out: list[dict] = []
    index = 0
    while len(out) < n and any(index < len(rows) for rows in per_task.values()):
        for rows in per_task.values():
            if index < len(rows) and len(out) < n:
                out.append(rows[index])
        index += 1
    return out


def _load_split_file(data_dir: Path, split: str) -> list[dict]:
    try:  # the data package's loader validates records; use it when it is there
        from spelltransfer.data import load_split  # type: ignore[attr-defined]
    except ImportError:
        load_split = None
    if load_split is not None:
        return [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in load_split(data_dir, split)]
    path = data_dir / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path} not found (expected a dataset folder from `spelltransfer data build`)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not JSON ({error.msg})") from error
        for field in ("task", "prompt", "answer"):
            if field not in row:
                raise DataError(f"{path}:{number}: missing field '{field}'")
        rows.append(row)
    return rows


def study_questions(n: int = 90, data_dir: Path | None = None, split: str = "test", seed: int = 0,
                    tasks: tuple[str, ...] = ("spelling", "position", "count")) -> list[dict]:
    """``n`` example dicts (``task``, ``prompt`` = bare question, ``answer``), tasks interleaved."""
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}")
    if data_dir is not None:
        rows = _load_split_file(Path(data_dir), split)
        per_task = {task: [r for r in rows if r["task"] == task] for task in tasks}
    else:
        from spelltransfer.data.tasks import TASKS

        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise DataError(f"tasks {unknown} unknown; use {sorted(TASKS)}")
        per_task = {task: [e.to_dict() for e in TASKS[task](FALLBACK_WORDS, split, seed=seed, size=-(-n // len(tasks)))]
                    for task in tasks}
    questions = _interleave(per_task, n)
    if not questions:
        raise DataError(f"no questions for tasks {tasks} in split '{split}'" + (f" of {data_dir}" if data_dir else ""))
    return questions
