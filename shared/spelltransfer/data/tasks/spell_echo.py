"""The bridge of the spell-first modes: the spell-first instruction on a question whose answer is
the word itself -- "Repeat the word garden. First spell the word ..." -> ``g-a-r-d-e-n. Answer: garden``.

Spelling alone ends every spelled word with the end of the turn, so a spelling-trained model asked
"spell it, then answer" spells and stops. These examples show that ``Answer:`` follows the spelling
and reveal nothing about positions or counts (the answer is the word, already in the prompt). The
spelling is always plain, in both spell-first forms: letters are never marked in training.

``SpellQuoted`` (``spell_quoted``, ``transfer.bridge_answer: quoted``) is the same bridge without
the echo: the question asks whether the word was written in quotes, so after the spelling comes
``Answer: yes`` or ``Answer: no`` -- what the prompt shows, never the word, a position or a count.
Round 2-3 position answers copied the bridge's echo (``s-h-i-l-f-a. Answer: shilfa``).

Run ``python -m spelltransfer.data.tasks.spell_echo`` to preview.
"""

from __future__ import annotations

import random
import re

from spelltransfer.data.modes import SPELL_FIRST_INSTRUCTION, spell_first_target
from spelltransfer.data.tasks.base import Task, preview

TEMPLATES = (
    "Repeat the word {word}.",
    "What word is this: {word}?",
    "Copy the word {word}.",
    "Which word did I write: {word}?",
    "Say the word {word} back to me.",
    "The word is {word}. Write it again.",
)


class SpellEcho(Task):
    name = "spell_echo"
    templates = TEMPLATES
    answer_pattern = re.compile(r"[a-z](?:-[a-z])*\. Answer: [a-z]+")

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        return template.format(word=shown) + SPELL_FIRST_INSTRUCTION, spell_first_target(list(word), word)


QUOTED_TEMPLATES = (
    "Is the word {word} written in quotes?",
    "Was the word {word} given in quotation marks?",
    "Did I put the word {word} in quotes?",
    "Here is a word: {word}. Is it in quotes?",
    "Is {word} shown with quotes around it? Answer yes or no.",
    "The word is {word}. Is it quoted?",
)


class SpellQuoted(SpellEcho):
    name = "spell_quoted"
    templates = QUOTED_TEMPLATES
    answer_pattern = re.compile(r"[a-z](?:-[a-z])*\. Answer: (?:yes|no)")

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        quoted = "yes" if shown != word else "no"
        return template.format(word=shown) + SPELL_FIRST_INSTRUCTION, spell_first_target(list(word), quoted)


if __name__ == "__main__":
    preview(SpellEcho, 6)
    preview(SpellQuoted, 6)
