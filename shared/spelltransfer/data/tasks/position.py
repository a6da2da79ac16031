"""Letter position: "What is the 3rd letter of the word garden?" -> ``r``.

Positions run over the whole word; about one question in six asks for the "last" letter, the
case the original study singled out. Ordinals are written as digits ("3rd") or words ("third")
at random so the model can't key on one form. Answers are one lowercase letter.

Run ``python -m spelltransfer.data.tasks.position`` to preview.
"""

from __future__ import annotations

import random
import re

from spelltransfer.data.tasks.base import Task, preview

LAST_RATE = 1 / 6
_ORDINAL_WORDS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
                  "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
                  "seventeenth", "eighteenth", "nineteenth", "twentieth")

TEMPLATES = (
    "What is the {ordinal} letter of the word {word}?",
    "Which letter comes {ordinal} in {word}?",
    "In the word {word}, what is the {ordinal} letter?",
    "Tell me the {ordinal} letter of {word}.",
    "Look at the word {word}. Which letter is {ordinal}?",
    "Give the {ordinal} letter in the word {word}. Answer with one letter.",
    "The word is {word}. What is its {ordinal} letter?",
    "Find the {ordinal} letter of {word}.",
    "What's the {ordinal} character in the word {word}?",
    "Consider {word}: what is the {ordinal} letter? Reply with just the letter.",
)

ANSWER_PATTERN = re.compile(r"[a-z]")


def ordinal(position: int, style: str = "digits") -> str:
    """1 -> "1st" / "first"; 11-13 take "th" ("11th"), the classic pitfall."""
    if style == "words" and position <= len(_ORDINAL_WORDS):
        return _ORDINAL_WORDS[position - 1]
    suffix = "th" if 10 <= position % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(position % 10, "th")
    return f"{position}{suffix}"


def format_answer(word: str, index: int) -> str:
    """The letter at 0-based ``index`` (-1 = last) of ``word`` (shared with grading)."""
    return word[index]


class Position(Task):
    name = "position"
    templates = TEMPLATES
    answer_pattern = ANSWER_PATTERN

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        if rng.random() < LAST_RATE:
            index, label = -1, "last"
        else:
            index = rng.randrange(len(word))
            label = ordinal(index + 1, rng.choice(("digits", "words")))
        return template.format(word=shown, ordinal=label), format_answer(word, index)


if __name__ == "__main__":
    preview(Position, 12)
