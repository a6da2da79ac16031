"""``DatasetConfig``: every knob of ``spelltransfer data build`` with its default and one line of help.

Validated once on construction (a bad value raises ConfigError naming the field); the CLI
options mirror these fields.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spelltransfer.errors import ConfigError


class DatasetConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, description="Seed for word selection and every example.")
    model: str = Field("smollm2-135m", description="Model whose tokenizer defines single-token (training) words.")
    train_words: int = Field(3000, ge=1, description="Training words drawn from the single-token English words.")
    eval_words: int = Field(3000, ge=2, description="Multi-token dictionary words, split into validation and test.")
    validation_fraction: float = Field(0.4, gt=0, lt=1, description="Share of eval words that go to validation.")
    train_size: int = Field(6000, ge=1, description="Spelling examples in train.jsonl (training words).")
    validation_per_task: int = Field(200, ge=1, description="Examples per task in validation.jsonl.")
    test_per_task: int = Field(300, ge=1, description="Examples per task in test.jsonl.")
    train_min_len: int = Field(3, ge=1, description="Shortest training word.")
    train_max_len: int = Field(12, ge=1, description="Longest training word.")
    eval_min_len: int = Field(4, ge=2, description="Shortest eval word.")
    eval_max_len: int = Field(12, ge=2, description="Longest eval word.")

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
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in error.errors())
            raise ConfigError(f"invalid dataset config: {problems}") from None
