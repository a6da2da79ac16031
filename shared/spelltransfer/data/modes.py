"""Transfer modes: how a position/count question is asked and answered, and what training adds.

* ``direct`` -- the question as the task writes it; the answer is a letter or a number.
* ``spell_first`` -- the question asks the model to spell the word first, then to give the
  answer after ``Answer:`` (``g-a-r-d-e-n. Answer: r``). The grader takes the final answer and
  records whether the spelling was right (``evaluate.answers.extract_spell_first``).
* ``format_aux`` -- direct questions, and training mixes in position/count questions over lists
  of whole words (``tasks/list_position.py``, ``tasks/list_count.py``): they teach the answer
  format and reveal no letters. With ``spell_first`` the same list questions come in the
  spell-first form (``apple-dog-cat. Answer: dog``).

This module owns the instructions and the spell-first answer layout; training and evaluation both
take them from here.
"""

from __future__ import annotations

from typing import Sequence

TRANSFER_MODES = ("direct", "spell_first", "format_aux")
# Tasks whose questions change with the mode; spelling is asked the same way in every mode.
MODE_TASKS = ("position", "count")
SPELL_FIRST_INSTRUCTION = " First spell the word with dashes between the letters (like c-a-t), then write Answer: and the answer."
LIST_FIRST_INSTRUCTION = " First write out the items with dashes between them (like one-two-three), then write Answer: and the answer."
ANSWER_MARK = "Answer:"
UNIT_SEPARATOR = "-"


def check_mode(mode: str) -> str:
    if mode not in TRANSFER_MODES:
        raise ValueError(f"transfer mode {mode!r} unknown; use one of {', '.join(TRANSFER_MODES)}")
    return mode


def question_form(mode: str) -> str:
    """``spell_first`` asks spell-first questions; ``direct`` and ``format_aux`` ask direct ones."""
    return "spell_first" if check_mode(mode) == "spell_first" else "direct"


def spell_first_target(units: Sequence[str], answer: str) -> str:
    """``["g", "a", "r"]``, ``"r"`` -> ``g-a-r. Answer: r`` (letters, or list items for the aux tasks)."""
    return f"{UNIT_SEPARATOR.join(units)}. {ANSWER_MARK} {answer}"


def eval_prompt(task: str, prompt: str, mode: str) -> str:
    """The prompt a position/count question is asked with in ``mode``."""
    if task in MODE_TASKS and question_form(mode) == "spell_first":
        return prompt + SPELL_FIRST_INSTRUCTION
    return prompt
