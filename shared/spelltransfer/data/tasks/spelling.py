"""Spelling: "Spell garden with dashes between the letters (like c-a-t)." -> ``g-a-r-d-e-n``.

Every prompt both names the separator and shows it on "cat", so the one right answer is
well-defined (", " vs "," is otherwise a coin toss). The word follows a space, bare or quoted
as the dataset's presentations say (``data/presentation.py``): quoting changes the word's
tokens, and people write both.

Run ``python -m spelltransfer.data.tasks.spelling`` to preview.
"""

from __future__ import annotations

import random
import re

from spelltransfer.data.tasks.base import Task, preview

# name -> (separator, how prompts describe it). Answers are separator.join(word).
SEPARATORS: dict[str, tuple[str, str]] = {
    "dash": ("-", "dashes"),
    "space": (" ", "single spaces"),
    "comma": (", ", "a comma and a space"),
    "dot": (".", "dots"),
}
EXAMPLE_WORD = "cat"

TEMPLATES = (
    "Spell the word {word} with {sep_name} between the letters, like {sep_example}.",
    "How do you spell {word}? Separate the letters with {sep_name} (e.g. {sep_example}).",
    "Write out the letters of {word}, separated by {sep_name}, in the form {sep_example}.",
    "Spell out {word} letter by letter, using {sep_name} as separators, as in {sep_example}.",
    "Please spell {word}. Put {sep_name} between the letters, for example {sep_example}.",
    "What are the letters in the word {word}? List them in order with {sep_name} in between, like {sep_example}.",
    "Break the word {word} into its letters joined by {sep_name} (like {sep_example}).",
    "Can you spell {word} for me? Use {sep_name} between letters, as in {sep_example}.",
    "Give the spelling of {word} with the letters separated by {sep_name}, e.g. {sep_example}.",
    "Letter by letter, how is {word} spelled? Separate them with {sep_name}, like {sep_example}.",
)

ANSWER_PATTERN = re.compile(r"[a-z](?:(?:-|\s|, |\.)[a-z])*")


def format_answer(word: str, separator: str) -> str:
    """The canonical spelling of ``word`` with ``separator`` between letters (shared with grading)."""
    return separator.join(word)


def separator_from_answer(word: str, answer: str) -> str | None:
    """Which separator name a canonical answer uses (None if it matches none), e.g. for breakdowns."""
    for name, (separator, _) in SEPARATORS.items():
        if answer == format_answer(word, separator):
            return name
    return None


class Spelling(Task):
    name = "spelling"
    templates = TEMPLATES
    answer_pattern = ANSWER_PATTERN

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        separator, sep_name = SEPARATORS[rng.choice(sorted(SEPARATORS))]
        prompt = template.format(word=shown, sep_name=sep_name,
                                 sep_example=format_answer(EXAMPLE_WORD, separator))
        return prompt, format_answer(word, separator)


if __name__ == "__main__":
    preview(Spelling, 12)
