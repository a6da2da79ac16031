"""``DatasetConfig``: every knob of ``spelltransfer data build`` with its default and one line of help.

Validated once on construction (a bad value raises ConfigError naming the field); the CLI
options mirror these fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spelltransfer.errors import ConfigError, format_validation_error


class DatasetConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, strict=True, description="Seed for word selection and every example.")
    model: str = Field("smollm2-135m", description="Model whose tokenizer defines single-token (training) words.")
    train_source: Literal["single", "dictionary", "both"] = Field(
        "both", description="Training words: single-token English words, multi-token dictionary words, or half each.")
    train_words: int = Field(34000, strict=True, ge=1, description="Training words (with 'both': half single-token, half dictionary).")
    coverage: bool = Field(True, strict=True, description="Choose dictionary training words to cover the most tokenizer pieces.")
    presentations: tuple[str, ...] = Field(("bare", "single", "double"), min_length=1,
                                           description="How prompts show the word (drawn per example): bare, single, double.")
    eval_words: int = Field(3000, strict=True, ge=2, description="Multi-token dictionary words, split into validation and test.")
    validation_fraction: float = Field(0.4, strict=True, gt=0, lt=1, description="Share of eval words that go to validation.")
    train_size: int = Field(40000, strict=True, ge=1, description="Spelling examples in train.jsonl (training words).")
    validation_per_task: int = Field(200, strict=True, ge=1, description="Examples per task in validation.jsonl.")
    test_per_task: int = Field(300, strict=True, ge=1, description="Examples per task in test.jsonl.")
    train_min_len: int = Field(3, strict=True, ge=1, description="Shortest training word.")
    train_max_len: int = Field(12, strict=True, ge=1, description="Longest training word.")
    eval_min_len: int = Field(4, strict=True, ge=2, description="Shortest eval word.")
    eval_max_len: int = Field(12, strict=True, ge=2, description="Longest eval word.")

    @field_validator("presentations")
    @classmethod
    def _known_presentations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from spelltransfer.data.presentation import PRESENTATIONS

        unknown = [p for p in value if p not in PRESENTATIONS]
        if unknown:
            raise ValueError(f"unknown {unknown}; use some of {', '.join(PRESENTATIONS)}")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _lengths_ordered(self) -> "DatasetConfig":
        if self.train_min_len > self.train_max_len:
            raise ValueError(f"train_min_len ({self.train_min_len}) > train_max_len ({self.train_max_len})")
        if self.eval_min_len > self.eval_max_len:
            raise ValueError(f"eval_min_len ({self.eval_min_len}) > eval_max_len ({self.eval_max_len})")
        return self

    @classmethod
    def create(cls, **values) -> "DatasetConfig":
        """Construct, turning pydantic's error into a ConfigError that names the field."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise ConfigError(f"invalid dataset config: {format_validation_error(error)}") from None
