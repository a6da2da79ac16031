"""A task is a deterministic, indexable list of examples over a list of words (nanochat style).

Example *i* of a task is rebuilt from nothing but ``(seed, task, split, i)`` through its own
``random.Random(seed_for(...))``: any example can be regenerated alone, no global RNG is touched,
and two splits can never share a random stream. Words are visited in a seeded permutation, so
the first ``len(words)`` examples use every word once before any word repeats.
"""

from __future__ import annotations

import hashlib
import random
import re
from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

from spelltransfer.data.example import EXTERNAL, SPLITS, Example
from spelltransfer.data.presentation import PRESENTATIONS, present
from spelltransfer.errors import DataError

_WORD_RE = re.compile(r"[a-z]+")


def seed_for(split: str, index: int, *, seed: int = 0, task: str = "") -> int:
    """A 64-bit seed for one example; sha256 so neighbouring indices get unrelated streams."""
    digest = hashlib.sha256(f"{seed}/{task}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class Task(ABC):
    """``len(task)`` examples; ``task[i]`` builds example *i*; subclasses only implement ``build``."""

    name: ClassVar[str]
    templates: ClassVar[tuple[str, ...]]
    # Canonical answer form; graders use it for "answered in the asked form".
    answer_pattern: ClassVar[re.Pattern[str]]

    def __init__(self, words: Sequence[str], split: str, seed: int = 0, size: int | None = None,
                 presentations: Sequence[str] = ("bare",)):
        if split not in SPLITS and split != EXTERNAL:
            raise DataError(f"split '{split}' unknown; use one of {', '.join(SPLITS)}")
        # Sorted first so the permutation depends on the word set and seed, not the caller's order.
        unique = sorted(set(words))
        if not unique:
            raise DataError(f"task '{self.name}' on split '{split}' got an empty word list")
        bad = [w for w in unique if not _WORD_RE.fullmatch(w)]
        if bad:
            raise DataError(f"task '{self.name}': words must be lowercase a-z only, got {bad[:5]}")
        if size is not None and size < 0:
            raise DataError(f"task '{self.name}': size must be >= 0, got {size}")
        unknown = [p for p in presentations if p not in PRESENTATIONS]
        if not presentations or unknown:
            raise DataError(f"task '{self.name}': presentations must be some of {', '.join(PRESENTATIONS)}, got {list(presentations)}")
        self.presentations = tuple(presentations)
        self.split = split
        self.seed = seed
        self.size = len(unique) if size is None else size
        self._order = unique
        random.Random(seed_for(split, -1, seed=seed, task=self.name)).shuffle(self._order)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < self.size:
            raise IndexError(f"{self.name}[{index}] out of range (size {self.size})")
        rng = random.Random(seed_for(self.split, index, seed=self.seed, task=self.name))
        word = self._order[index % len(self._order)]
        template_index = rng.randrange(len(self.templates))
        # Its own stream: the template and choices of example i do not depend on the presentations.
        presentation = random.Random(seed_for(self.split, index, seed=self.seed, task=self.name + "/shown")).choice(
            self.presentations) if len(self.presentations) > 1 else self.presentations[0]
        prompt, answer = self.build(word, present(word, presentation), self.templates[template_index], rng)
        return Example(task=self.name, word=word, prompt=prompt, answer=answer,
                       template_id=f"{self.name}/{template_index}", split=self.split, presentation=presentation)

    def __iter__(self):
        return (self[i] for i in range(self.size))

    @abstractmethod
    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        """Render ``template`` for ``word`` (written ``shown`` in the prompt) with choices drawn
        from ``rng``: (prompt, answer)."""


# Single-character items that are not letters (and not the layout's "-", "(", ")", ".", ",", ":"):
# lists of them show the list formats on one-character units without revealing any letter.
SYMBOL_ITEMS = tuple("0123456789") + tuple("#@%&*+=?!$~^")


class ListTask(Task):
    """A format task over a list of whole items (``list_position``, ``list_count``): ``form`` is
    ``direct``, ``spell_first`` or ``spell_marked`` (``data/modes.py``); items are the task's short
    words, and a ``symbol_fraction`` share of the lists are made of ``SYMBOL_ITEMS`` instead."""

    max_item_len: ClassVar[int] = 6  # keeps a 10-item list and its spelled-out answer inside max_seq_length

    def __init__(self, *args, form: str = "direct", symbol_fraction: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= symbol_fraction <= 1.0:
            raise DataError(f"task '{self.name}': symbol_fraction must be in [0, 1], got {symbol_fraction}")
        self.form = form
        self.symbol_fraction = symbol_fraction
        self._items = [w for w in self._order if len(w) <= self.max_item_len] or self._order

    def item_pool(self, rng: random.Random) -> Sequence[str]:
        """The items one list draws from; no draw from ``rng`` at fraction 0, so those lists stay as they were."""
        if self.symbol_fraction > 0 and rng.random() < self.symbol_fraction:
            return SYMBOL_ITEMS
        return self._items


def preview(task_cls: type[Task], n: int = 8) -> None:
    """Print ``n`` examples of a task on a few words (the ``__main__`` of each task module)."""
    words = ["garden", "strawberry", "cat", "mississippi", "quantum", "letter", "banana", "rhythm"]
    for example in task_cls(words, "validation", seed=0, size=n, presentations=tuple(PRESENTATIONS)):
        print(f"[{example.template_id}] {example.prompt!r} -> {example.answer!r}")
