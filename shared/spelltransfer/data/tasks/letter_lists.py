"""Position and count over a list of single LETTERS given in the prompt (format tasks, round 4):
"In the list q, x, b, m, what is the 3rd item?" -> ``b``; "How many times does b appear in the
list q, b, x, b?" -> ``2``. In the spell-first form the answer writes the list out first,
``q-x-b-m. Answer: b`` -- the same layout as a spelled word followed by its answer, so what is
taught is "index / count the units of a dashed sequence", on units that are letters.

No word's spelling is revealed:

* the letters are always in the prompt, *separated* (``q, x, b, m``), never written together as
  a string (that would be character-level supervision on a string's tokens);
* a list whose letters, joined, form a dictionary word (``data/words.is_english``: web2 or GCIDE,
  with plain inflections) or *contain* one of 4 letters or more (web2 ∪ GCIDE) is rejected and
  drawn again. Every validation and test word is such a word (they come from web2 ∩ GCIDE, 4-12
  letters), so no eval word's letters ever appear in order, in full; ``data build`` checks that and
  records it in the manifest (``letter_lists``); each task instance counts its redraws (``redrawn``).

Lengths follow the test words' lengths (``LENGTH_WEIGHTS``) so positions range as they do on the
test; letters are drawn uniformly, with repeats, as in words. Count answers are 0, 1, 2 and 3 in
equal shares (the letter-count test has 45 % "1": a skewed training prior would look like skill).
The ``_lw`` variants word the question with "letter" ("what is the 3rd letter in the list q, x, b,
m?") and, spell-first, ask for "the letters with dashes (like c-a-t)".

Run ``python -m spelltransfer.data.tasks.letter_lists`` to preview.
"""

from __future__ import annotations

import random
import re
import string
from functools import lru_cache
from typing import ClassVar, Sequence

from spelltransfer.data.modes import LETTER_LIST_FIRST_INSTRUCTION, count_marks, instruction, position_marks, spell_first_target
from spelltransfer.data.tasks.base import Task, preview
from spelltransfer.data.tasks.position import LAST_RATE, ordinal

LETTERS = tuple(string.ascii_lowercase)
# Word length -> how many of the 750 distinct test words (default build, seed 0) have it.
LENGTH_WEIGHTS = {4: 18, 5: 45, 6: 81, 7: 99, 8: 141, 9: 119, 10: 106, 11: 71, 12: 70}
COUNT_ANSWERS = (0, 1, 2, 3)  # drawn uniformly
MIN_INNER_WORD = 4  # the shortest eval word: no dictionary word this long may sit inside a list
MAX_DRAWS = 1000

POSITION_TEMPLATES = (
    "In the list {items}, what is the {ordinal} item?",
    "What is the {ordinal} item in the list: {items}?",
    "Which item comes {ordinal} in this list: {items}?",
    "Here is a list: {items}. Which item is {ordinal}?",
    "Tell me the {ordinal} item of the list {items}.",
    "Give the {ordinal} item of the list: {items}. Answer with one item.",
)
POSITION_LETTER_TEMPLATES = (
    "In the list {items}, what is the {ordinal} letter?",
    "What is the {ordinal} letter in the list: {items}?",
    "Which letter comes {ordinal} in this list: {items}?",
    "Here are some letters: {items}. Which letter is {ordinal}?",
    "Tell me the {ordinal} letter of the list {items}.",
    "Give the {ordinal} letter in the list {items}. Answer with one letter.",
)
COUNT_TEMPLATES = (
    "How many times does {item} appear in the list {items}?",
    "How many {item}'s are in this list: {items}?",
    "In the list {items}, how many times does {item} occur?",
    "Count the item {item} in the list {items}. Answer with a number.",
    "Here is a list: {items}. How many times is {item} in it? Reply with a number.",
    "How often does {item} occur in the list: {items}?",
)
COUNT_LETTER_TEMPLATES = (
    "How many times does the letter {item} appear in the list {items}?",
    "How many {item}'s are in this list of letters: {items}?",
    "In the list {items}, how many times does the letter {item} occur?",
    "Count the letter {item} in the list {items}. Answer with a number.",
    "Here are some letters: {items}. How many times is {item} among them? Reply with a number.",
    "How often does the letter {item} occur in the list: {items}?",
)

_UNITS = r"[a-z](?:-[a-z])*"
_MARKED_UNITS = r"[a-z](?:\(\d+\))?(?:-[a-z](?:\(\d+\))?)*"


@lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    from spelltransfer.data.words import _dictionaries

    web2, gcide = _dictionaries()
    return web2 | gcide


def spells_a_word(letters: Sequence[str], forbidden: frozenset[str] = frozenset()) -> bool:
    """Whether ``letters``, joined, are a dictionary word (or a word of ``forbidden``) or contain one
    of at least ``MIN_INNER_WORD`` letters: such a list would show a word's letters in order."""
    from spelltransfer.data.words import is_english

    joined = "".join(letters)
    if joined in forbidden or is_english(joined):
        return True
    words = _dictionary()
    n = len(joined)
    return any(joined[i:j] in words or joined[i:j] in forbidden
               for i in range(n) for j in range(i + MIN_INNER_WORD, n + 1))


def draw_length(rng: random.Random) -> int:
    return rng.choices(tuple(LENGTH_WEIGHTS), weights=tuple(LENGTH_WEIGHTS.values()))[0]


def guard_report(eval_words: dict[str, Sequence[str]], train_words: Sequence[str], seed: int = 0, sample: int = 1000) -> dict:
    """What ``data build`` records under ``letter_lists``: every eval word must be one the check
    refuses (else DataError), and how many of ``sample`` letter lists per task it made redraw."""
    from spelltransfer.errors import DataError

    refused = {split: sum(spells_a_word(list(w)) for w in words) for split, words in eval_words.items()}
    missed = {split: [w for w in words if not spells_a_word(list(w))][:5] for split, words in eval_words.items()}
    if any(missed.values()):
        raise DataError(f"letter lists would not refuse these eval words: {missed}")
    redrawn = {}
    for cls in (ListLetterPosition, ListLetterCount):
        task = cls(train_words, "train", seed=seed, size=sample)
        for _ in task:
            pass
        redrawn[cls.name] = task.redrawn
    return {"rule": f"lists whose joined letters are a dictionary word or hold one of >= {MIN_INNER_WORD} letters are redrawn",
            "eval_words_refused": {split: f"{n}/{len(eval_words[split])}" for split, n in refused.items()},
            "sample_lists_per_task": sample, "sample_redrawn": redrawn}


class LetterListTask(Task):
    """A list-of-letters task in a ``form`` (``direct``, ``spell_first``, ``spell_marked``)."""

    kind: ClassVar[str]  # the list task whose instructions it takes: list_position / list_count
    letter_wording: ClassVar[bool] = False

    def __init__(self, *args, form: str = "direct", forbidden: Sequence[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.form = form
        self.forbidden = frozenset(forbidden)
        self.redrawn = 0  # lists rejected by spells_a_word, over the examples built so far

    def draw(self, rng: random.Random) -> tuple[list[str], str, str]:
        """(letters, what is asked -- an ordinal or a letter --, answer): one list that passes the check."""
        for _ in range(MAX_DRAWS):
            letters, asked, answer = self.draw_once(rng)
            if not spells_a_word(letters, self.forbidden):
                return letters, asked, answer
            self.redrawn += 1
        raise RuntimeError(f"{self.name}: no list without a word in {MAX_DRAWS} draws")

    def draw_once(self, rng: random.Random) -> tuple[list[str], str, str]:
        raise NotImplementedError

    def finish(self, prompt: str, letters: list[str], answer: str, marks) -> tuple[str, str]:
        if self.form == "direct":
            return prompt, answer
        if self.form == "spell_first" and self.letter_wording:
            return prompt + LETTER_LIST_FIRST_INSTRUCTION, spell_first_target(letters, answer)
        return prompt + instruction(self.kind, self.form), spell_first_target(
            letters, answer, marks if self.form == "spell_marked" else None)


class ListLetterPosition(LetterListTask):
    name = "list_letter_position"
    kind = "list_position"
    templates = POSITION_TEMPLATES
    answer_pattern = re.compile(rf"[a-z]|{_UNITS}\. (?:{_MARKED_UNITS}\. )?Answer: [a-z]")

    def draw_once(self, rng):
        letters = [rng.choice(LETTERS) for _ in range(draw_length(rng))]
        if rng.random() < LAST_RATE:
            index, label = len(letters) - 1, "last"
        else:
            index = rng.randrange(len(letters))
            label = ordinal(index + 1, rng.choice(("digits", "words")))
        return letters, label, letters[index]

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        letters, label, answer = self.draw(rng)
        prompt = template.format(ordinal=label, items=", ".join(letters))
        return self.finish(prompt, letters, answer, position_marks(len(letters)))


class ListLetterCount(LetterListTask):
    name = "list_letter_count"
    kind = "list_count"
    templates = COUNT_TEMPLATES
    answer_pattern = re.compile(rf"\d+|{_UNITS}\. (?:{_MARKED_UNITS}\. )?Answer: \d+")

    def draw_once(self, rng):
        length, target = draw_length(rng), rng.choice(COUNT_ANSWERS)
        asked = rng.choice(LETTERS)
        others = [c for c in LETTERS if c != asked]
        letters = [rng.choice(others) for _ in range(length)]
        for slot in rng.sample(range(length), target):
            letters[slot] = asked
        return letters, asked, str(target)

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        letters, asked, answer = self.draw(rng)
        prompt = template.format(item=asked, items=", ".join(letters))
        return self.finish(prompt, letters, answer, count_marks(letters, asked))


class ListLetterPositionLetterWording(ListLetterPosition):
    name = "list_letter_position_lw"
    templates = POSITION_LETTER_TEMPLATES
    letter_wording = True


class ListLetterCountLetterWording(ListLetterCount):
    name = "list_letter_count_lw"
    templates = COUNT_LETTER_TEMPLATES
    letter_wording = True


if __name__ == "__main__":
    for cls in (ListLetterPosition, ListLetterCount, ListLetterPositionLetterWording, ListLetterCountLetterWording):
        preview(cls, 4)
