"""The one record every part of spelltransfer exchanges: a question, its answer and provenance.

A JSONL line of a dataset folder is exactly ``Example.to_dict()``; ``prompt`` is the bare
question (chat formatting belongs to ``spelltransfer.models.PromptFormat``), ``answer`` the exact
canonical answer the grader compares against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

TASK_NAMES = ("spelling", "position", "count")
SPLITS = ("train", "validation", "test")
# Examples read from a user's file (``load_external``) carry this split and template id.
EXTERNAL = "external"


@dataclass(frozen=True)
class Example:
    """One question with its canonical answer; ``word`` is the word the question is about."""

    task: str
    word: str
    prompt: str
    answer: str
    template_id: str
    split: str
    presentation: str = "bare"  # how the prompt shows the word: bare, single or double (data/presentation.py)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


FIELD_NAMES = tuple(f.name for f in fields(Example))
# Fields a file written before they existed may lack (they take their default).
OPTIONAL_FIELDS = ("presentation",)
