"""Which base model to adapt and how: dtype, sequence length, 4-bit, LoRA (configs/models/model_config.yaml).

``lora.target_modules: auto`` is resolved once per architecture (read from the model's
config.json): Llama-style models get every linear layer of attention and MLP, GPT-2 its fused
``c_attn``/``c_proj``/``c_fc``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from spelltransfer.errors import ConfigError

LLAMA_STYLE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGET_MODULES_BY_ARCH = {
    "llama": LLAMA_STYLE, "mistral": LLAMA_STYLE, "qwen2": LLAMA_STYLE, "qwen3": LLAMA_STYLE,
    "gemma": LLAMA_STYLE, "gemma2": LLAMA_STYLE, "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}


class LoraSettings(BaseModel):
    """LoRA adapter shape; the same for both backends so their adapters are interchangeable."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, strict=True, ge=1, le=1024, description="LoRA rank; at most 1024 for every engine (packed "
                  "too); serving with vLLM takes up to 512 and says so when an adapter is larger.")
    alpha: int = Field(32, strict=True, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, strict=True, ge=0.0, lt=1.0, description="Dropout on the LoRA input (0 keeps Unsloth's fast path).")
    target_modules: Literal["auto"] | list[str] = Field(
        "auto", description="Module names to adapt, or auto = all linear layers for the architecture."
    )


class ModelConfig(BaseModel):
    """The base model and adapter (configs/models/model_config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("smollm2-135m", min_length=1, description="smollm2-135m (bundled), a local HF folder, a .gguf file or a hub id.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype: auto = bf16 on CUDA, fp32 on CPU."
    )
    max_seq_length: int = Field(128, strict=True, ge=16, le=32768, description="Longest prompt+answer in tokens; longer examples are truncated from the prompt's left.")
    load_in_4bit: bool = Field(False, strict=True, description="Load the base weights in 4 bit (unsloth backend on CUDA only).")
    gradient_checkpointing: StrictBool | Literal["unsloth"] = Field(
        False, description="Recompute activations to save memory; 'unsloth' = Unsloth's offloaded variant."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapter settings.")


def resolve_target_modules(model_path: str, lora: LoraSettings) -> list[str]:
    """The module names to adapt: the configured list, or the architecture's linear layers."""
    if lora.target_modules != "auto":
        if not lora.target_modules:
            raise ConfigError("model.lora.target_modules: must not be empty (use auto or a list of module names)")
        return list(lora.target_modules)
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"model.lora.target_modules: auto needs {config_file} to find the architecture; list the modules instead")
    model_type = json.loads(config_file.read_text()).get("model_type", "")
    if model_type not in TARGET_MODULES_BY_ARCH:
        raise ConfigError(
            f"model.lora.target_modules: auto does not know architecture '{model_type}' "
            f"(known: {', '.join(sorted(TARGET_MODULES_BY_ARCH))}); list the modules instead"
        )
    return list(TARGET_MODULES_BY_ARCH[model_type])
