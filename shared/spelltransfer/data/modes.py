"""Transfer modes: how a position/count question is asked and answered, and what training adds.

* ``direct`` -- the question as the task writes it; the answer is a letter or a number.
* ``spell_first`` -- the question asks the model to spell the word first, then to give the
  answer after ``Answer:`` (``g-a-r-d-e-n. Answer: r``). The grader takes the final answer and
  records whether the spelling was right (``evaluate.answers.extract_spell_first``).
* ``format_aux`` -- direct questions, and training mixes in position/count questions over lists
  of whole words (``tasks/list_position.py``, ``tasks/list_count.py``): they teach the answer
  format and reveal no letters. With ``spell_first`` the same list questions come in the
  spell-first form (``apple-dog-cat. Answer: dog``).
* ``spell_marked`` -- spell-first in two passes: the model spells the word, then writes the same
  units again with marks, then answers. For position every unit carries its number
  (``g-a-r-d. g(1)-a(2)-r(3)-d(4). Answer: r``), for count each match carries its running tally
  (``s-t-r-a-w-b-e-r-r-y. s-t-r(1)-a-w-b-e-r(2)-r(3)-y. Answer: 3``). The second pass copies the
  first, so the marking is learned as "copy the dashed units you just wrote, numbering them";
  training shows it on lists of whole items only (words, and single digits or symbols when
  ``transfer.aux_symbol_fraction`` asks for them): letters are never marked in training, so a
  marked letter is transfer.

Round 4 adds lists of single *letters* (``tasks/letter_lists.py``, ``transfer.aux_letter_fraction``),
always given separated in the prompt (``q, x, b, m``): in the spell-first form
``q-x-b-m. Answer: b`` has the layout of a spelled word and its answer, on a list whose letters
never form a dictionary (hence never an eval) word. In ``spell_marked`` such lists are marked too:
then training marks letters, but only those of a list given in the prompt, never a word's.

Both spell-first modes may mix in *bridge* examples (``tasks/spell_echo.py``): the spell-first
instruction on a question whose answer is the word itself (``g-a-r-d-e-n. Answer: garden``). They
teach "after the spelling comes ``Answer:``", which spelling alone never shows, and reveal nothing
about positions or counts. With ``transfer.bridge_answer: quoted`` the bridge (``spell_quoted``)
answers whether the word was written in quotes (``g-a-r-d-e-n. Answer: no``) instead of echoing it.

This module owns the instructions and the spell-first answer layout; training and evaluation both
take them from here.
"""

from __future__ import annotations

from typing import Sequence

TRANSFER_MODES = ("direct", "spell_first", "format_aux", "spell_marked")
SPELL_FORMS = ("spell_first", "spell_marked")
# Tasks whose questions change with the mode; spelling is asked the same way in every mode.
MODE_TASKS = ("position", "count")
SPELL_FIRST_INSTRUCTION = " First spell the word with dashes between the letters (like c-a-t), then write Answer: and the answer."
LIST_FIRST_INSTRUCTION = " First write out the items with dashes between them (like one-two-three), then write Answer: and the answer."
# Lists of single letters worded with "letter" (tasks/letter_lists.py, the ``_lw`` tasks).
LETTER_LIST_FIRST_INSTRUCTION = " First write out the letters with dashes between them (like c-a-t), then write Answer: and the answer."
MARKED_INSTRUCTIONS = {
    "position": " First spell the word with dashes (like c-a-t), then write the letters again with each letter's number after it (like c(1)-a(2)-t(3)), then write Answer: and the answer.",
    "count": " First spell the word with dashes (like b-a-n-a-n-a), then write the letters again with the running count after each copy of the asked letter (like b-a(1)-n-a(2)-n-a(3) for a), then write Answer: and the answer.",
}
LIST_MARKED_INSTRUCTIONS = {
    "list_position": " First write out the items with dashes (like one-two-three), then write the items again with each item's number after it (like one(1)-two(2)-three(3)), then write Answer: and the answer.",
    "list_count": " First write out the items with dashes (like red-blue-red-blue), then write the items again with the running count after each copy of the asked item (like red-blue(1)-red-blue(2) for blue), then write Answer: and the answer.",
}
ANSWER_MARK = "Answer:"
UNIT_SEPARATOR = "-"
MARK_PATTERN = r"\(\d+\)"  # the mark a unit carries in spell_marked: "(3)"


def check_mode(mode: str) -> str:
    if mode not in TRANSFER_MODES:
        raise ValueError(f"transfer mode {mode!r} unknown; use one of {', '.join(TRANSFER_MODES)}")
    return mode


def question_form(mode: str) -> str:
    """The form position/count questions take: ``spell_first`` / ``spell_marked`` as the mode says;
    ``direct`` and ``format_aux`` ask direct ones."""
    mode = check_mode(mode)
    return mode if mode in SPELL_FORMS else "direct"


def spell_first_target(units: Sequence[str], answer: str, marks: Sequence[str | None] | None = None) -> str:
    """``["g", "a", "r"]``, ``"r"`` -> ``g-a-r. Answer: r`` (letters, or list items for the aux
    tasks); ``marks`` (``spell_marked``) adds the second pass, the units again with ``(n)`` after
    those that carry one: ``g-a-r. g(1)-a(2)-r(3). Answer: r``."""
    plain = UNIT_SEPARATOR.join(units)
    if marks is None:
        return f"{plain}. {ANSWER_MARK} {answer}"
    marked = UNIT_SEPARATOR.join(unit if mark is None else f"{unit}({mark})" for unit, mark in zip(units, marks, strict=True))
    return f"{plain}. {marked}. {ANSWER_MARK} {answer}"


def position_marks(n_units: int) -> list[str]:
    """Every unit's number, 1-based: the position layout of ``spell_marked``."""
    return [str(i + 1) for i in range(n_units)]


def count_marks(units: Sequence[str], target: str) -> list[str | None]:
    """The running tally on each unit equal to ``target``: the count layout of ``spell_marked``."""
    marks, seen = [], 0
    for unit in units:
        if unit == target:
            seen += 1
            marks.append(str(seen))
        else:
            marks.append(None)
    return marks


def instruction(task: str, form: str) -> str:
    """What a ``form`` question (``task`` a letter or list task) appends to its prompt."""
    if form == "spell_first":
        return LIST_FIRST_INSTRUCTION if task.startswith("list_") else SPELL_FIRST_INSTRUCTION
    if form == "spell_marked":
        table = LIST_MARKED_INSTRUCTIONS if task.startswith("list_") else MARKED_INSTRUCTIONS
        return table[task]
    return ""


def eval_prompt(task: str, prompt: str, mode: str) -> str:
    """The prompt a position/count question is asked with in ``mode``."""
    if task in MODE_TASKS:
        return prompt + instruction(task, question_form(mode))
    return prompt
