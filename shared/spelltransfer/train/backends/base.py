"""What a training backend provides: a PEFT-wrapped causal LM with its tokenizer, ready to train.

The training loop is the same for every backend; a backend only decides how the base model is
loaded and the LoRA layers attached (plain transformers + PEFT, or Unsloth's patched kernels).
Both produce a ``peft.PeftModel``, so ``save_pretrained`` writes the same adapter format and the
checkpoint code can load LoRA weights back with ``set_peft_model_state_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from spelltransfer.train.model_config import ModelConfig


@dataclass
class LoadedModel:
    model: object          # peft.PeftModel in train mode
    tokenizer: object
    device: str
    model_path: str        # resolved base-model folder (recorded in metrics and adapter config)
    target_modules: list[str]


class Backend(Protocol):
    name: str

    def load(self, config: ModelConfig, seed: int) -> LoadedModel:
        """Load the base model and attach fresh LoRA layers initialised from ``seed``."""

    def loss(self, model, batch: dict):
        """Mean next-token loss over the answer tokens of a padded batch (labels -100 elsewhere)."""

    def for_inference(self, model) -> None:
        """Switch to generation mode (Unsloth needs this; HF needs only eval())."""

    def for_training(self, model) -> None:
        """Back to training mode after generation."""
