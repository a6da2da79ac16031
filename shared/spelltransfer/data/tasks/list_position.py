"""Position over a list of whole words (a format task, no letters revealed):
"What is the 3rd word in the list: apple, dog, cat, fish?" -> ``cat``.

Lists are 3-10 words long (the length range of the letter tasks' words), positions and the
"last" share follow ``position.py``. With ``form="spell_first"`` the question asks for the items
first and the answer is ``apple-dog-cat-fish. Answer: cat``; with ``form="spell_marked"`` the items
come again with their numbers, ``apple-dog-cat-fish. apple(1)-dog(2)-cat(3)-fish(4). Answer: cat``
(``data/modes.py``). ``symbol_fraction`` of the lists hold single digits or symbols instead of words.

Run ``python -m spelltransfer.data.tasks.list_position`` to preview.
"""

from __future__ import annotations

import random
import re

from spelltransfer.data.modes import instruction, position_marks, spell_first_target
from spelltransfer.data.tasks.base import ListTask, preview
from spelltransfer.data.tasks.position import LAST_RATE, ordinal

MIN_ITEMS, MAX_ITEMS = 3, 10
UNIT_PATTERN = r"(?:[a-z]+|[^\s,.():-])"  # a word or one symbol (tasks.base.SYMBOL_ITEMS)
UNITS_PATTERN = rf"{UNIT_PATTERN}(?:-{UNIT_PATTERN})*"
MARKED_UNITS_PATTERN = rf"{UNIT_PATTERN}(?:\(\d+\))?(?:-{UNIT_PATTERN}(?:\(\d+\))?)*"

TEMPLATES = (
    "What is the {ordinal} word in the list: {items}?",
    "Which word comes {ordinal} in this list: {items}?",
    "In the list {items}, what is the {ordinal} word?",
    "Tell me the {ordinal} item of the list: {items}.",
    "Here is a list: {items}. Which item is {ordinal}?",
    "Give the {ordinal} word of the list {items}. Answer with one word.",
)


class ListPosition(ListTask):
    name = "list_position"
    templates = TEMPLATES
    answer_pattern = re.compile(rf"{UNIT_PATTERN}|{UNITS_PATTERN}\. (?:{MARKED_UNITS_PATTERN}\. )?Answer: {UNIT_PATTERN}")

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        pool = self.item_pool(rng)
        items = rng.sample(pool, min(len(pool), rng.randint(MIN_ITEMS, MAX_ITEMS)))
        if rng.random() < LAST_RATE:
            index, label = len(items) - 1, "last"
        else:
            index = rng.randrange(len(items))
            label = ordinal(index + 1, rng.choice(("digits", "words")))
        prompt = template.format(ordinal=label, items=", ".join(items))
        if self.form == "direct":
            return prompt, items[index]
        marks = position_marks(len(items)) if self.form == "spell_marked" else None
        return prompt + instruction(self.name, self.form), spell_first_target(items, items[index], marks)


if __name__ == "__main__":
    preview(ListPosition, 8)
