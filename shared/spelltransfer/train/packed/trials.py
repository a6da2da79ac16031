"""One trial of a packed run: its LoRA shape, optimiser settings, batch and length.

``batch_size`` and ``grad_accum`` mean what they mean in ``configs/training/config.yaml``:
``batch_size`` examples per optimizer step, split into ``grad_accum`` micro-batches whose mean
answer losses are averaged. The seed grid's "batch b, grad-accum g" (HF Trainer's
per-device batch times accumulation) is ``batch_size = b * g, grad_accum = g``.
"""

from __future__ import annotations

import math
import random

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrialSpec(BaseModel):
    """A trial the packed trainer runs beside others on the same base model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trial_id: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="Name (adapter folder name).")
    seed: int = Field(1234, ge=0, description="LoRA init (as PEFT after torch.manual_seed) and data order.")
    r: int = Field(16, ge=1, le=256, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA alpha (scale = alpha / r).")
    lr: float = Field(2e-4, gt=0, le=1.0, description="Peak learning rate.")
    batch_size: int = Field(16, ge=1, description="Examples per optimizer step.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per step; batch_size must divide by it.")
    max_steps: int = Field(200, ge=1, description="Optimizer steps.")
    weight_decay: float = Field(0.0, ge=0.0, description="Decoupled weight decay.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip this trial's gradient norm; null = no clipping.")

    @model_validator(mode="after")
    def _check(self) -> "TrialSpec":
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})")
        return self

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum


def sample_seed_grid(n: int, seed: int = 0, max_steps_cap: int | None = 1000) -> list[TrialSpec]:
    """``n`` random trials from the seed study's grid.

    r in {4, 8, 16, 32}, alpha in {8, 16, 32, 64}, lr log-uniform in [1e-4, 1e-3], micro-batch in
    {4, 8, 16, 32}, grad-accum in {1, 2, 4, 8}, steps uniform in [500, 5000] (capped).
    """
    rng = random.Random(seed)
    trials = []
    for i in range(n):
        micro = rng.choice([4, 8, 16, 32])
        accum = rng.choice([1, 2, 4, 8])
        steps = rng.randint(500, 5000)
        if max_steps_cap:
            steps = min(steps, max_steps_cap)
        trials.append(TrialSpec(
            trial_id=f"trial-{i:03d}", seed=rng.randrange(1, 2**31 - 1), r=rng.choice([4, 8, 16, 32]),
            alpha=rng.choice([8, 16, 32, 64]), lr=round(math.exp(rng.uniform(math.log(1e-4), math.log(1e-3))), 8),
            batch_size=micro * accum, grad_accum=accum, max_steps=steps,
        ))
    return trials
