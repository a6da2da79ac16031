"""Early stopping on one validation metric: patience counted in evaluations, with min-delta.

Kept pure (no torch, no I/O) so the rule can be tested on a fixed sequence of values and the
trainer only feeds it numbers: ``improved = stopper.update(step, value)``, then ``stopper.should_stop``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EarlyStoppingConfig(BaseModel):
    """When to stop: a metric that stops improving by ``min_delta`` for ``patience`` evaluations."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, strict=True, description="Stop early when the metric stops improving.")
    metric: Literal["eval_loss", "accuracy"] = Field(
        "eval_loss", description="eval_loss (teacher-forced loss on validation answers) or accuracy (greedy generation on a validation sample)."
    )
    patience: int = Field(3, strict=True, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, strict=True, ge=0.0, description="Smallest change that counts as an improvement.")


class EarlyStopping:
    """Track the best value of a metric and decide when patience has run out."""

    def __init__(self, patience: int, min_delta: float = 0.0, mode: Literal["min", "max"] = "min"):
        if patience < 1:
            raise ValueError(f"patience must be >= 1 (got {patience})")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max' (got {mode!r})")
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.stopped_step: int | None = None

    @classmethod
    def from_config(cls, config: EarlyStoppingConfig) -> "EarlyStopping":
        return cls(config.patience, config.min_delta, "min" if config.metric == "eval_loss" else "max")

    def update(self, step: int, value: float) -> bool:
        """Record one evaluation; True when it is a new best."""
        if self.best_value is None or self._better(value, self.best_value):
            self.best_value, self.best_step, self.bad_evals = value, step, 0
            return True
        self.bad_evals += 1
        if self.bad_evals >= self.patience and self.stopped_step is None:
            self.stopped_step = step
        return False

    @property
    def should_stop(self) -> bool:
        return self.stopped_step is not None

    def _better(self, value: float, best: float) -> bool:
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "stopped_step": self.stopped_step}

    def load_state_dict(self, state: dict) -> None:
        self.best_value = state["best_value"]
        self.best_step = state["best_step"]
        self.bad_evals = state["bad_evals"]
        self.stopped_step = state["stopped_step"]
