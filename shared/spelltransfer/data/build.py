"""Build a dataset folder: ``DIR/{train,validation,test}.jsonl``, ``DIR/hf/``, ``DIR/words.json``
and ``DIR/manifest.json``.

train = spelling on training words (the trainer mixes in position/count on the same words with
``make_examples``); validation and test = spelling, position and count on their own eval words,
interleaved task by task so that the first N lines of a split are balanced across tasks.
Everything is written into a staging folder beside ``DIR`` and moved in file by file with
``os.replace``; the manifest goes last, so a folder with a manifest is always complete.

Run: ``spelltransfer data build --out data/spelling`` or ``build_dataset("data/spelling")``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

from spelltransfer.atomic import replace_dir, staged_dir
from spelltransfer.data.config import DatasetConfig
from spelltransfer.data.example import SPLITS, TASK_NAMES, Example
from spelltransfer.data.io import write_jsonl
from spelltransfer.data.tasks import get_task
from spelltransfer.data.tasks.letter_lists import guard_report
from spelltransfer.data.words import (WordLists, describe_tokenizer, load_word_tokenizer, piece_coverage, select_words,
                                     token_counts)
from spelltransfer.errors import DataError

FORMAT_VERSION = 2  # 2: examples carry a presentation; training words from single/dictionary/both
SPLIT_TASKS = {"train": ("spelling",), "validation": TASK_NAMES, "test": TASK_NAMES}
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def make_examples(task: str, words: Sequence[str], n: int, seed: int = 0, split: str = "train",
                  presentations: Sequence[str] = ("bare",), **task_options) -> list[Example]:
    """``n`` examples of ``task`` over ``words``; the same arguments always give the same list.

    For the trainer: e.g. ``make_examples("position", words.train, 2000, seed)`` mixes position
    questions on training words into training without touching the eval words.
    """
    return list(get_task(task)(words, split, seed=seed, size=n, presentations=presentations, **task_options))


def split_examples(split: str, words: WordLists, config: DatasetConfig) -> list[Example]:
    """The examples of one split, interleaved across its tasks."""
    per_task = {"train": config.train_size, "validation": config.validation_per_task, "test": config.test_per_task}[split]
    streams = [make_examples(task, words.for_split(split), per_task, config.seed, split, config.presentations)
               for task in SPLIT_TASKS[split]]
    return [stream[i] for i in range(per_task) for stream in streams]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hash(data_dir: str | os.PathLike) -> str:
    """sha256 over the three JSONL files (name and bytes, in split order): same data, same hash."""
    digest = hashlib.sha256()
    for split in SPLITS:
        path = Path(data_dir) / f"{split}.jsonl"
        digest.update(f"{split}.jsonl\0{_sha256(path)}\n".encode())
    return digest.hexdigest()


def _save_hf(staging: Path, examples: dict[str, list[Example]]) -> None:
    import datasets
    from datasets import Dataset, DatasetDict, Features, Value

    # datasets' own bars would interleave with the CLI's; restore the caller's setting after.
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        features = Features({name: Value("string") for name in Example.__dataclass_fields__})
        DatasetDict({split: Dataset.from_list([e.to_dict() for e in rows], features=features)
                     for split, rows in examples.items()}).save_to_disk(str(staging / "hf"))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _install(staging: Path, out_dir: Path) -> None:
    """Move the staged files into ``out_dir``: whole folder if new, else file by file, manifest last."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    (out_dir / "manifest.json").unlink(missing_ok=True)  # the folder is incomplete until the new one lands
    for name in [f"{s}.jsonl" for s in SPLITS] + ["words.json"]:
        os.replace(staging / name, out_dir / name)
    replace_dir(staging / "hf", out_dir / "hf")
    os.replace(staging / "manifest.json", out_dir / "manifest.json")


def build_dataset(out_dir: str | os.PathLike, config: DatasetConfig | None = None, *, tokenizer=None,
                  progress: Progress | None = None, **overrides) -> dict:
    """Build the dataset folder ``out_dir`` and return its manifest.

    ``overrides`` are DatasetConfig fields (``seed=1``, ``test_per_task=50``, ...). ``tokenizer``
    skips loading the one of ``config.model`` (tests pass one they already hold).
    """
    started = time.perf_counter()
    base = config.model_dump() if config is not None else {}
    config = DatasetConfig.create(**{**base, **overrides})
    report = progress or (lambda stage, done, total: None)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder; choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    if tokenizer is None:
        report("tokenizer", 0, 1)
        tokenizer = load_word_tokenizer(config.model)
    report("tokenizer", 1, 1)
    report("words", 0, 1)
    words = select_words(tokenizer, seed=config.seed, train_words=config.train_words, eval_words=config.eval_words,
                         validation_fraction=config.validation_fraction, train_min_len=config.train_min_len,
                         train_max_len=config.train_max_len, eval_min_len=config.eval_min_len,
                         eval_max_len=config.eval_max_len, train_source=config.train_source,
                         coverage=config.coverage)
    report("words", 1, 1)

    examples = {}
    for split in SPLITS:
        report(split, 0, 1)
        examples[split] = split_examples(split, words, config)
        report(split, 1, 1)

    with staged_dir(out_dir, prefix=f".{out_dir.name}.build-", install=_install) as staging:
        report("write", 0, 1)
        files = {}
        for split in SPLITS:
            path = staging / f"{split}.jsonl"
            lines = write_jsonl(path, examples[split])
            files[path.name] = {"sha256": _sha256(path), "lines": lines}
        (staging / "words.json").write_text(json.dumps(words.to_dict(), indent=0) + "\n")
        _save_hf(staging, examples)
        report("write", 1, 1)
        counts = {split: {task: sum(e.task == task for e in rows) for task in SPLIT_TASKS[split]}
                  for split, rows in examples.items()}
        manifest = {
            "format_version": FORMAT_VERSION,
            "seed": config.seed,
            "model": config.model,
            "tokenizer": describe_tokenizer(tokenizer),
            "counts": counts,
            "totals": {split: len(rows) for split, rows in examples.items()},
            "words": {"train": len(words.train), "validation": len(words.validation), "test": len(words.test),
                      "train_pool": words.train_pool, "eval_candidates": words.eval_candidates,
                      "train_source": config.train_source,
                      "train_single_token": sum(n == 1 for n in token_counts(tokenizer, list(words.train))),
                      "train_multi_token": sum(n >= 2 for n in token_counts(tokenizer, list(words.train)))},
            "piece_coverage": piece_coverage(tokenizer, words.train, {"validation": words.validation, "test": words.test}),
            # round 4's letter lists (made at train time, data/tasks/letter_lists.py): the check that keeps
            # every validation/test word out of them, run on this build's words
            "letter_lists": guard_report({"validation": words.validation, "test": words.test}, words.train, config.seed),
            "presentations": {split: {p: sum(e.presentation == p for e in rows) for p in config.presentations}
                              for split, rows in examples.items()},
            "content_sha256": content_hash(staging),
            "files": files,
            "config": config.model_dump(mode="json"),
            "english_words_version": metadata.version("english-words"),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_manifest(data_dir: str | os.PathLike) -> dict:
    """``DIR/manifest.json``; DataError if the folder was never (completely) built."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; build the dataset with `spelltransfer data build --out {data_dir}`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from error


def load_words(data_dir: str | os.PathLike) -> WordLists:
    """The word lists a dataset folder was built from (``DIR/words.json``)."""
    path = Path(data_dir) / "words.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; rebuild the dataset with `spelltransfer data build --out {data_dir}`")
    try:
        lists = json.loads(path.read_text())
        return WordLists(train=tuple(lists["train"]), validation=tuple(lists["validation"]),
                         test=tuple(lists["test"]), train_pool=0, eval_candidates=0)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{path}: malformed word lists ({error})") from error
