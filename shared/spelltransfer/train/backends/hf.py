"""The portable backend: transformers + PEFT, on CPU or CUDA."""

from __future__ import annotations

from spelltransfer.errors import ConfigError
from spelltransfer.train.backends.base import LoadedModel
from spelltransfer.train.model_config import ModelConfig, resolve_target_modules


class HFBackend:
    name = "hf"

    def load(self, config: ModelConfig, seed: int) -> LoadedModel:
        import torch
        from peft import LoraConfig, get_peft_model

        from spelltransfer.models import load_model, load_tokenizer, resolve_model_path

        if config.load_in_4bit:
            raise ConfigError("model.load_in_4bit: only the unsloth backend (CUDA) loads 4-bit weights; set it false or use training.backend=unsloth")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model_path = resolve_model_path(config.name)
        target_modules = resolve_target_modules(model_path, config.lora)
        tokenizer = load_tokenizer(config.name)
        base = load_model(config.name, dtype=config.dtype, device=device)
        if config.gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
        torch.manual_seed(seed)  # LoRA A matrices are drawn from torch's global RNG
        lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                          target_modules=target_modules, bias="none", task_type="CAUSAL_LM")
        try:
            model = get_peft_model(base, lora)
        except ValueError as error:
            raise ConfigError(f"model.lora.target_modules: {error}") from error
        model.train()
        return LoadedModel(model, tokenizer, device, model_path, target_modules)

    def loss(self, model, batch: dict):
        from spelltransfer.train.loss import answer_only_loss

        return answer_only_loss(model, batch)

    def for_inference(self, model) -> None:
        model.eval()

    def for_training(self, model) -> None:
        model.train()
