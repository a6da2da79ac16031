"""The fast CUDA backend: Unsloth's patched Llama kernels, same LoRA, same adapter format.

``import unsloth`` must run before transformers/peft/trl are imported, or its patches are
partly missed: ``python -m spelltransfer.train`` does that first thing when this backend is
selected. Checked on Unsloth 2026.10.9 (``FastLanguageModel.from_pretrained`` with a local
folder, ``get_peft_model``, ``for_inference``/``for_training``).
"""

from __future__ import annotations

import logging
import sys

from spelltransfer.errors import ConfigError
from spelltransfer.train.backends.base import LoadedModel
from spelltransfer.train.model_config import ModelConfig, resolve_target_modules

log = logging.getLogger(__name__)


def import_unsloth():
    """Import unsloth, warning when transformers got imported first (patches then apply partly)."""
    if "unsloth" not in sys.modules and "transformers" in sys.modules:
        log.warning("transformers was imported before unsloth; run `python -m spelltransfer.train` for all of Unsloth's patches")
    import unsloth  # noqa: F401

    return unsloth


class UnslothBackend:
    name = "unsloth"

    def load(self, config: ModelConfig, seed: int) -> LoadedModel:
        import_unsloth()
        import torch
        from unsloth import FastLanguageModel

        from spelltransfer.models import resolve_model_path

        if not torch.cuda.is_available():
            raise ConfigError("training.backend: unsloth needs a CUDA GPU; use hf (or auto) on this machine")
        dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[config.dtype]
        model_path = resolve_model_path(config.name)
        target_modules = resolve_target_modules(model_path, config.lora)
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=model_path, max_seq_length=config.max_seq_length, dtype=dtype,
            load_in_4bit=config.load_in_4bit,
        )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        model = FastLanguageModel.get_peft_model(
            model, r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
            target_modules=target_modules, bias="none",
            use_gradient_checkpointing=config.gradient_checkpointing, random_state=seed,
            max_seq_length=config.max_seq_length,
        )
        FastLanguageModel.for_training(model)
        return LoadedModel(model, tokenizer, "cuda", model_path, target_modules)

    def loss(self, model, batch: dict):
        from spelltransfer.train.loss import full_logits_loss

        return full_logits_loss(model, batch)  # Unsloth's fused head + cross-entropy

    def for_inference(self, model) -> None:
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)

    def for_training(self, model) -> None:
        from unsloth import FastLanguageModel

        FastLanguageModel.for_training(model)
