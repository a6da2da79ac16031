"""Task data: words, one module per task (``data/tasks/``), dataset build and loading.

    from spelltransfer.data import build_dataset, load_split, make_examples
    manifest = build_dataset("data/spelling", seed=0)         # DIR/{train,validation,test}.jsonl, hf/, manifest.json
    test = load_split("data/spelling", "test")                # list[Example]
    extra = make_examples("count", load_words("data/spelling").train, 1000, seed=0)

Names are resolved lazily so ``python -m spelltransfer.data.tasks.spelling`` stays clean.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Example": "example", "TASK_NAMES": "example", "SPLITS": "example",
    "DatasetConfig": "config",
    "build_dataset": "build", "make_examples": "build", "content_hash": "build", "load_manifest": "build",
    "load_words": "build",
    "load_examples": "io", "load_split": "io", "load_external": "io", "write_jsonl": "io",
    "WordLists": "words", "select_words": "words",
    "get_task": "tasks", "TASKS": "tasks",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
