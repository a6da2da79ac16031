"""Packed multi-trial LoRA training: K trials on one frozen base model, one batch, one backward.

    from spelltransfer.train.packed import PackedTrainer, TrialSpec, sample_seed_grid
    trainer = PackedTrainer(model, tokenizer, train_records, sample_seed_grid(64, seed=0))
    trainer.train()
    trainer.export(0, "adapters/trial-000")   # PeftModel.from_pretrained(base, that folder)

See ``trainer.py`` for the design and ``docs/performance.md`` for measured speed.
"""

from spelltransfer.train.packed.generate import generate_for_trials
from spelltransfer.train.packed.multi_lora import MultiLoRALinear, MultiLoRAWeights, export_adapter, inject_multi_lora
from spelltransfer.train.packed.trainer import PackedHistory, PackedTrainer, StepStats
from spelltransfer.train.packed.trials import TrialSpec, sample_seed_grid

__all__ = ["MultiLoRALinear", "MultiLoRAWeights", "PackedHistory", "PackedTrainer", "StepStats", "TrialSpec",
           "export_adapter", "generate_for_trials", "inject_multi_lora", "sample_seed_grid"]
