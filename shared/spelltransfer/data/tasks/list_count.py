"""Counting in a list of whole words (a format task, no letters revealed):
"How many times does the word dog appear in the list: dog, cat, dog, fish?" -> ``2``.

Lists of 3-10 words drawn with repeats from 2-6 distinct words, so counts spread like letter
counts; a quarter of the questions ask for a word the list lacks (``0``), as ``count.py`` does.
With ``form="spell_first"`` the answer is ``dog-cat-dog-fish. Answer: 2``; with ``form="spell_marked"``
the items come again with a running tally on each copy of the asked item,
``dog-cat-dog-fish. dog(1)-cat-dog(2)-fish. Answer: 2``
(``data/modes.py``).

Run ``python -m spelltransfer.data.tasks.list_count`` to preview.
"""

from __future__ import annotations

import random
import re

from spelltransfer.data.modes import count_marks, instruction, spell_first_target
from spelltransfer.data.tasks.base import ListTask, preview
from spelltransfer.data.tasks.count import ABSENT_RATE
from spelltransfer.data.tasks.list_position import MARKED_UNITS_PATTERN, UNITS_PATTERN, MAX_ITEMS, MIN_ITEMS

TEMPLATES = (
    "How many times does the word {item} appear in the list: {items}?",
    "How many {item}'s are in this list: {items}?",
    "Count the word {item} in the list {items}. Answer with a number.",
    "In the list {items}, how many times does {item} occur?",
    "How often does the word {item} occur in the list: {items}?",
    "Here is a list: {items}. How many times is {item} in it? Reply with a number.",
)


class ListCount(ListTask):
    name = "list_count"
    templates = TEMPLATES
    answer_pattern = re.compile(rf"\d+|{UNITS_PATTERN}\. (?:{MARKED_UNITS_PATTERN}\. )?Answer: \d+")

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        pool = self.item_pool(rng)
        distinct = rng.sample(pool, min(len(pool), rng.randint(2, 6)))
        items = [rng.choice(distinct) for _ in range(rng.randint(MIN_ITEMS, MAX_ITEMS))]
        absent = [w for w in distinct if w not in items]
        if rng.random() < ABSENT_RATE:
            item = absent[0] if absent else next((w for w in pool if w not in items), items[0])
        else:
            item = rng.choice(sorted(set(items)))
        answer = str(items.count(item))
        prompt = template.format(item=item, items=", ".join(items))
        if self.form == "direct":
            return prompt, answer
        marks = count_marks(items, item) if self.form == "spell_marked" else None
        return prompt + instruction(self.name, self.form), spell_first_target(items, answer, marks)


class ListCountBalanced(ListCount):
    """``list_count`` with the answers 0, 1, 2 and 3 in equal shares (``transfer.aux_balanced_counts``):
    drawn as above, about 45 % of the answers are "1" and 3 is rare, the letter-count test's own skew."""

    name = "list_count_balanced"

    def build(self, word: str, shown: str, template: str, rng: random.Random) -> tuple[str, str]:
        from spelltransfer.data.tasks.letter_lists import COUNT_ANSWERS

        pool = self.item_pool(rng)
        target = rng.choice(COUNT_ANSWERS)
        distinct = rng.sample(pool, min(len(pool), rng.randint(2, 6)))
        item, others = distinct[0], distinct[1:] or [w for w in pool if w != distinct[0]][:1]
        if not others:  # a one-item pool: only the plain draw is possible
            return super().build(word, shown, template, rng)
        items = [rng.choice(others) for _ in range(rng.randint(max(MIN_ITEMS, target + 1), MAX_ITEMS))]
        for slot in rng.sample(range(len(items)), target):
            items[slot] = item
        answer = str(target)
        prompt = template.format(item=item, items=", ".join(items))
        if self.form == "direct":
            return prompt, answer
        marks = count_marks(items, item) if self.form == "spell_marked" else None
        return prompt + instruction(ListCount.name, self.form), spell_first_target(items, answer, marks)


if __name__ == "__main__":
    preview(ListCount, 8)
    preview(ListCountBalanced, 8)
