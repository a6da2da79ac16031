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
    eval_items_per_task: int = Field(100, ge=1, description="Items per task for the evaluation of a trained model.")
    mix_position_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of training examples that are position questions.")
    mix_count_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of training examples that are count questions.")

    @model_validator(mode="after")
    def _check_mix(self) -> "TransferConfig":
        if self.mix_position_fraction + self.mix_count_fraction >= 1.0:
            raise ValueError(
                "mix_position_fraction + mix_count_fraction must be < 1 (spelling needs a share) "
                f"(got {self.mix_position_fraction} + {self.mix_count_fraction})"
            )
        return self

    def mix_fractions(self) -> dict[str, float]:
        return {"position": self.mix_position_fraction, "count": self.mix_count_fraction}
