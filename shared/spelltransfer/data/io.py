"""Reading and writing example files, with errors that name the file and line.

``load_examples`` reads our own JSONL strictly (every field, known task and split, canonical
answer form); ``load_external`` reads a user's JSONL (``prompt``/``answer``/``task``) or TSV
(``input1<TAB>label`` with the task given) for evaluation, checking only what grading needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from spelltransfer.atomic import open_atomic
from spelltransfer.data.example import EXTERNAL, FIELD_NAMES, OPTIONAL_FIELDS, SPLITS, TASK_NAMES, Example
from spelltransfer.data.presentation import PRESENTATIONS
from spelltransfer.errors import DataError, shorten, short_repr, shown_key
from spelltransfer.limits import read_lines

_TSV_HEADERS = {("input1", "label"), ("prompt", "answer"), ("input", "label")}


def _read_lines(path: Path) -> list[str]:
    """The file's lines, read within ``spelltransfer.limits`` (a line or file over its limit fails
    fast, naming the limit, instead of being read whole into memory)."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    lines = [line for _, line in read_lines(path)]
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: file is empty (no examples)")
    return lines


def _parse_json(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})") from error
    except (RecursionError, ValueError) as error:  # nested too deep, or an int too long to read
        raise DataError(f"{path}:{number}: JSON cannot be read ({type(error).__name__})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
    return record


def _validated(path: Path, number: int, record: dict) -> Example:
    from spelltransfer.data.tasks import get_task

    missing = [name for name in FIELD_NAMES if name not in record and name not in OPTIONAL_FIELDS]
    if missing:
        raise DataError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
    extra = sorted(set(record) - set(FIELD_NAMES))
    if extra:
        raise DataError(f"{path}:{number}: unknown field(s) {shorten(', '.join(shown_key(name) for name in extra[:5]))}")
    for name in (n for n in FIELD_NAMES if n in record):
        if not isinstance(record[name], str) or not record[name].strip():
            raise DataError(f"{path}:{number}: field '{name}' must be a non-empty string, got {short_repr(record[name])}")
    if record["task"] not in TASK_NAMES:
        raise DataError(f"{path}:{number}: field 'task' is '{shorten(record['task'])}'; use one of {', '.join(TASK_NAMES)}")
    if record["split"] not in SPLITS:
        raise DataError(f"{path}:{number}: field 'split' is '{shorten(record['split'])}'; use one of {', '.join(SPLITS)}")
    if not record["template_id"].startswith(record["task"] + "/"):
        raise DataError(f"{path}:{number}: field 'template_id' '{shorten(record['template_id'])}' does not belong to task '{record['task']}'")
    if record.get("presentation", "bare") not in PRESENTATIONS:
        raise DataError(f"{path}:{number}: field 'presentation' is {short_repr(record['presentation'])}; use one of {', '.join(PRESENTATIONS)}")
    if not get_task(record["task"]).answer_pattern.fullmatch(record["answer"]):
        raise DataError(f"{path}:{number}: field 'answer' {short_repr(record['answer'])} is not a well-formed {record['task']} answer")
    return Example(**{name: record[name] for name in FIELD_NAMES if name in record})


def load_examples(path: str | os.PathLike) -> list[Example]:
    """Every example of one of our JSONL files; a bad line raises DataError naming ``file:line``."""
    path = Path(path)
    examples = []
    for number, line in enumerate(_read_lines(path), start=1):
        if line.strip():
            examples.append(_validated(path, number, _parse_json(path, number, line)))
    return examples


def load_split(data_dir: str | os.PathLike, split: str) -> list[Example]:
    """``DIR/{split}.jsonl`` of a dataset folder built by ``build_dataset``."""
    if split not in SPLITS:
        raise DataError(f"split '{split}' unknown; use one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: dataset folder not found (build it with `spelltransfer data build --out {data_dir}`)")
    return load_examples(data_dir / f"{split}.jsonl")


def load_external(path: str | os.PathLike, task: str | None = None) -> list[Example]:
    """Examples from a user's file for evaluation.

    ``.jsonl``: objects with ``prompt`` and ``answer`` (strings) and ``task`` (or ``task`` given
    here as the default); ``word`` and ``template_id`` are kept when present. ``.tsv``:
    ``prompt<TAB>answer`` per line (a header ``input1<TAB>label`` is skipped); ``task`` required.
    Split is ``"external"``; ``template_id`` defaults to ``"external"``.
    """
    from spelltransfer.data.tasks import get_task

    path = Path(path)
    if task is not None:
        get_task(task)  # raises DataError naming the choices
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".tsv"):
        raise DataError(f"{path}: unsupported file type '{suffix}'; use .jsonl (prompt/answer/task) or .tsv (input1<TAB>label)")
    if suffix == ".tsv" and task is None:
        raise DataError(f"{path}: a TSV file has no task column; pass the task (spelling, position or count)")
    examples = []
    lines = _read_lines(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if suffix == ".tsv":
            cells = line.split("\t")
            if len(cells) != 2:
                raise DataError(f"{path}:{number}: expected 2 tab-separated columns (input1, label), got {len(cells)}")
            if number == 1 and tuple(c.strip().lower() for c in cells) in _TSV_HEADERS:
                continue
            record = {"prompt": cells[0], "answer": cells[1], "task": task}
        else:
            record = _parse_json(path, number, line)
            record.setdefault("task", task)
        for name in ("prompt", "answer", "task"):
            if not isinstance(record.get(name), str) or not record[name].strip():
                hint = " (or pass the task)" if name == "task" else ""
                raise DataError(f"{path}:{number}: field '{name}' must be a non-empty string{hint}, got {short_repr(record.get(name))}")
        if record["task"] not in TASK_NAMES:
            raise DataError(f"{path}:{number}: field 'task' is '{shorten(record['task'])}'; use one of {', '.join(TASK_NAMES)}")
        examples.append(Example(task=record["task"], word=str(record.get("word") or ""),
                                prompt=record["prompt"].strip(), answer=record["answer"].strip(),
                                template_id=str(record.get("template_id") or EXTERNAL), split=EXTERNAL))
    if not examples:
        raise DataError(f"{path}: no examples (only a header?)")
    return examples


def write_jsonl(path: str | os.PathLike, examples: Iterable[Example]) -> int:
    """Write examples atomically (temp file in the same folder + os.replace); returns the count."""
    count = 0
    with open_atomic(path, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count
