"""Optimizer and learning-rate schedule, each with its config beside it.

Only the LoRA parameters (``requires_grad``) are optimised; the schedule is a LambdaLR so its
state is a step counter and resumes exactly.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator


class OptimizerConfig(BaseModel):
    """AdamW over the adapter weights (configs/training/optimizer.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["adamw"] = Field("adamw", description="Optimizer; AdamW (torch) is the one supported.")
    lr: float = Field(1e-3, strict=True, gt=0.0, le=1.0, description="Peak learning rate; 1e-3 because LoRA on the "
                      "135M base tolerates it and short CPU runs need it (the recipe's value too).")
    weight_decay: float = Field(0.0, strict=True, ge=0.0, description="Decoupled weight decay.")
    betas: tuple[StrictFloat, StrictFloat] = Field((0.9, 0.999), description="Adam beta1, beta2, each in [0, 1).")
    eps: float = Field(1e-8, strict=True, gt=0.0, description="Adam epsilon.")
    max_grad_norm: float | None = Field(1.0, strict=True, gt=0.0, description="Clip the gradient norm to this; null = no clipping.")

    @model_validator(mode="after")
    def _check_betas(self) -> "OptimizerConfig":
        for beta in self.betas:
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"betas: each must be in [0, 1) (got {list(self.betas)})")
        return self


class SchedulerConfig(BaseModel):
    """Learning-rate schedule (configs/training/scheduler.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["linear", "cosine", "constant"] = Field(
        "cosine", description="Decay after warmup: linear to 0, cosine to 0, or constant; cosine, the schedule the "
                              "shipped configs and the recipe train with.")
    warmup_steps: int | None = Field(None, strict=True, ge=0, description="Linear warmup steps; null = use warmup_ratio.")
    warmup_ratio: float = Field(0.05, strict=True, ge=0.0, lt=1.0, description="Warmup as a fraction of max_steps when warmup_steps is null.")

    def resolved_warmup(self, max_steps: int) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(round(self.warmup_ratio * max_steps))


def build_optimizer(parameters, config: OptimizerConfig):
    import torch

    trainable = [p for p in parameters if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                             weight_decay=config.weight_decay)


def lr_factor(step: int, config: SchedulerConfig, max_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    warmup = config.resolved_warmup(max_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if config.name == "constant":
        return 1.0
    progress = (step - warmup) / max(1, max_steps - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if config.name == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, config: SchedulerConfig, max_steps: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, max_steps))
