"""Letter counting: "How many times does the letter r appear in strawberry?" -> ``3``.

A quarter of the questions ask for a letter the word lacks (answer ``0``): without them "count"
degenerates into "is it there". Of the rest, a third ask for a letter the word repeats (when it
has one), else any of its distinct letters: drawn plainly, ~55 % of answers would be "1" and a
model that always says "1" would look skilled. Answers are a digit string.

Run ``python -m spelltransfer.data.tasks.count`` to preview.
"""

from __future__ import annotations

import random
import re
import string

from spelltransfer.data.tasks.base import Task, preview

ABSENT_RATE = 0.25
REPEATED_RATE = 1 / 3  # of the questions about a present letter

TEMPLATES = (
    "How many times does the letter {letter} appear in {word}?",
    "How many {letter}'s are in the word {word}?",
    "Count the letter {letter} in {word}. Answer with a number.",
    "In the word {word}, how many times does the letter {letter} occur?",
    "How often does the letter {letter} occur in the word {word}?",
    "What is the number of {letter}'s in {word}?",
    "Count how many times the letter {letter} appears in the word {word}.",
    "The word is {word}. How many {letter}'s does it contain?",
    "How many copies of the letter {letter} are there in {word}?",
    "Consider {word}: how many times does {letter} appear? Reply with a number.",
)

ANSWER_PATTERN = re.compile(r"\d+")


def format_answer(word: str, letter: str) -> str:
    """How often ``letter`` occurs in ``word``, as a digit string (shared with grading)."""
    return str(word.count(letter))


class Count(Task):
    name = "count"
    templates = TEMPLATES
    answer_pattern = ANSWER_PATTERN

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        absent = sorted(set(string.ascii_lowercase) - set(word))
        repeated = sorted({c for c in word if word.count(c) > 1})
        if absent and rng.random() < ABSENT_RATE:
            letter = rng.choice(absent)
        elif repeated and rng.random() < REPEATED_RATE:
            letter = rng.choice(repeated)
        else:
            letter = rng.choice(sorted(set(word)))
        return template.format(word=shown, letter=letter), format_answer(word, letter)


if __name__ == "__main__":
    preview(Count, 12)
