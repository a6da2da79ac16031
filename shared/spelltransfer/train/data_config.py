"""Which data a run trains and validates on, and what transfer tasks are mixed in or evaluated."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["spelling", "position", "count"]


class TransferConfig(BaseModel):
    """Transfer tasks: which to evaluate and how many, and what share of training they take
    (configs/training/transfer_config.yaml). Mixing is 0 by default: the study measures transfer
    from spelling alone unless a run asks otherwise."""

    model_config = ConfigDict(extra="forbid")

    eval_tasks: list[Task] = Field(["spelling", "position", "count"], min_length=1, description="Tasks evaluated on validation/test.")
    eval_items_per_task: int = Field(100, strict=True, ge=1, description="Items per task for the evaluation of a trained model.")
    mix_position_fraction: float = Field(0.0, strict=True, ge=0.0, lt=1.0, description="Share of training examples that are position questions.")
    mix_count_fraction: float = Field(0.0, strict=True, ge=0.0, lt=1.0, description="Share of training examples that are count questions.")
    mode: Literal["direct", "spell_first", "format_aux", "spell_marked"] = Field(
        "direct", description="Transfer mode (data/modes.py): how position/count are asked and graded, and whether "
                              "training mixes list-format questions.")
    aux_fraction: float = Field(0.0, strict=True, ge=0.0, lt=1.0, description="Share of training examples that are list questions "
                                "(half position, half count over whole words); format_aux needs > 0, the spell-first modes may use it.")
    bridge_fraction: float = Field(0.0, strict=True, ge=0.0, lt=1.0, description="Share of training examples that are spell-first "
                                   "bridge questions (tasks/spell_echo.py: spell the word, then Answer: the word); "
                                   "spell_first and spell_marked only.")
    aux_symbol_fraction: float = Field(0.0, strict=True, ge=0.0, le=1.0, description="Share of the list questions whose "
                                       "items are single digits or symbols (data/tasks/base.py SYMBOL_ITEMS) instead of "
                                       "words: one-character units, still no letter revealed.")
    aux_letter_fraction: float = Field(0.0, strict=True, ge=0.0, le=1.0, description="Share of the list questions whose "
                                       "items are single letters, given separated in the prompt (data/tasks/letter_lists.py: "
                                       "q-x-b-m. Answer: b); lists that join into a dictionary word are redrawn. "
                                       "aux_symbol_fraction applies to the other list questions.")
    aux_letter_wording: float = Field(0.0, strict=True, ge=0.0, le=1.0, description="Share of the letter-list questions "
                                      "that say 'letter' instead of 'item' (what is the 3rd letter in the list q, x, b, m?).")
    aux_balanced_counts: bool = Field(False, strict=True, description="Count questions over word/symbol lists answer "
                                      "0, 1, 2 and 3 in equal shares (letter-list counts always do).")
    bridge_answer: Literal["word", "quoted"] = Field("word", description="What the bridge answers after the spelling: "
                                                     "the word itself (tasks/spell_echo.py), or whether the word was written "
                                                     "in quotes, yes/no (spell_quoted), which echoes nothing.")

    @model_validator(mode="after")
    def _check_mix(self) -> "TransferConfig":
        shares = (self.mix_position_fraction, self.mix_count_fraction, self.aux_fraction, self.bridge_fraction)
        if sum(shares) >= 1.0:
            raise ValueError(
                "mix_position_fraction + mix_count_fraction + aux_fraction + bridge_fraction must be < 1 "
                f"(spelling needs a share) (got {' + '.join(map(str, shares))})"
            )
        if self.bridge_fraction > 0 and self.mode not in ("spell_first", "spell_marked"):
            raise ValueError(f"bridge_fraction > 0 needs mode spell_first or spell_marked (got mode {self.mode})")
        if self.mode == "format_aux" and self.aux_fraction <= 0:
            raise ValueError("mode format_aux needs aux_fraction > 0 (the list questions are what it adds)")
        if self.mode == "direct" and self.aux_fraction > 0:
            raise ValueError("aux_fraction > 0 with mode direct: use mode format_aux (direct trains on spelling alone)")
        if self.aux_symbol_fraction > 0 and self.aux_fraction <= 0:
            raise ValueError("aux_symbol_fraction > 0 needs aux_fraction > 0 (it shapes the list questions)")
        if self.aux_letter_fraction > 0 and self.aux_fraction <= 0:
            raise ValueError("aux_letter_fraction > 0 needs aux_fraction > 0 (it shapes the list questions)")
        if self.aux_letter_wording > 0 and self.aux_letter_fraction <= 0:
            raise ValueError("aux_letter_wording > 0 needs aux_letter_fraction > 0 (it words the letter lists)")
        return self

    def mix_fractions(self) -> dict[str, float]:
        """Share of the training set per mixed-in task (position/count reveal letters; the list tasks do not).
        The variants of round 4 are tasks of their own (data/tasks/__init__.py), each with its share."""
        half = self.aux_fraction / 2
        letters = half * self.aux_letter_fraction
        worded = letters * self.aux_letter_wording
        rest = half - letters
        echo = self.bridge_answer == "word"
        return {"position": self.mix_position_fraction, "count": self.mix_count_fraction,
                "list_position": rest,
                "list_count": 0.0 if self.aux_balanced_counts else rest,
                "spell_echo": self.bridge_fraction if echo else 0.0,
                "list_count_balanced": rest if self.aux_balanced_counts else 0.0,
                "list_letter_position": letters - worded, "list_letter_count": letters - worded,
                "list_letter_position_lw": worded, "list_letter_count_lw": worded,
                "spell_quoted": 0.0 if echo else self.bridge_fraction}

    def aux_form(self) -> str:
        """The form the list questions take: the mode's spell-first form, else direct."""
        from spelltransfer.data.modes import question_form

        return question_form(self.mode)
