"""One trial of a packed run: its LoRA shape, optimiser settings, batch and length.

``batch_size`` and ``grad_accum`` mean what they mean in ``configs/training/config.yaml``:
``batch_size`` examples per optimizer step, split into ``grad_accum`` micro-batches whose mean
answer losses are averaged. The seed grid's "batch b, grad-accum g" (HF Trainer's
per-device batch times accumulation) is ``batch_size = b * g, grad_accum = g``.
"""

from __future__ import annotations

import copy
import math
import random

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

from spelltransfer.train.config import RunConfig, check_batch_split

# RunConfig field -> TrialSpec field: what each member of a pack sets for itself.
TRIAL_FIELDS = {
    "training.seed": "seed", "model.lora.r": "r", "model.lora.alpha": "alpha", "optimizer.lr": "lr",
    "optimizer.weight_decay": "weight_decay", "optimizer.max_grad_norm": "max_grad_norm",
    "training.batch_size": "batch_size", "training.grad_accum": "grad_accum", "training.max_steps": "max_steps",
}


def _run_config_field(dotted: str) -> FieldInfo:
    """The RunConfig field at ``dotted`` (default, bounds, strictness, description), copied: a trial
    has no defaults or bounds of its own, so it cannot drift from ``spelltransfer train``."""
    *sections, name = dotted.split(".")
    model = RunConfig
    for section in sections:
        model = model.model_fields[section].annotation
    return copy.deepcopy(model.model_fields[name])


class TrialSpec(BaseModel):
    """A trial the packed trainer runs beside others on the same base model: a view of the
    ``RunConfig`` fields in ``TRIAL_FIELDS`` (``TrialSpec.from_config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trial_id: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="Name (adapter folder name).")
    seed: int = _run_config_field("training.seed")
    r: int = _run_config_field("model.lora.r")
    alpha: int = _run_config_field("model.lora.alpha")
    lr: float = _run_config_field("optimizer.lr")
    batch_size: int = _run_config_field("training.batch_size")
    grad_accum: int = _run_config_field("training.grad_accum")
    max_steps: int = _run_config_field("training.max_steps")
    weight_decay: float = _run_config_field("optimizer.weight_decay")
    max_grad_norm: float | None = _run_config_field("optimizer.max_grad_norm")

    @model_validator(mode="after")
    def _check(self) -> "TrialSpec":
        check_batch_split(self.batch_size, self.grad_accum)
        return self

    @classmethod
    def from_config(cls, config: RunConfig, trial_id: str) -> "TrialSpec":
        """The trial ``config`` describes, named ``trial_id``."""
        values = {}
        for dotted, name in TRIAL_FIELDS.items():
            value = config
            for part in dotted.split("."):
                value = getattr(value, part)
            values[name] = value
        return cls(trial_id=trial_id, **values)

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
