"""Export a trained LoRA adapter for deployment: the adapter itself, a merged full model, GGUF.

    spelltransfer export RUN_DIR/final --name tuned --eval results/eval/tuned.json \\
        --eval-label base=results/eval/base.json --out results/deployment/models

writes ``OUT/NAME/adapter/`` (PEFT folder), ``OUT/NAME/merged/`` (LoRA folded into the weights
with ``merge_and_unload``: HF safetensors that load with plain ``AutoModelForCausalLM``) and, with
``--gguf``, ``OUT/NAME/gguf/NAME.gguf``; each carries a model card with the eval figures. The
whole ``OUT/NAME`` folder is built in a temp folder beside it and renamed into place, so a
failed export never leaves a half-written model where a server could pick it up.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spelltransfer.atomic import staged_dir
from spelltransfer.errors import ConfigError, ModelNotFoundError
from spelltransfer.run_folder import FINAL_DIR, RunFolder
from spelltransfer.serving.model_card import load_eval_files, render_card

DEFAULT_MODELS_DIR = Path("results/deployment/models")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


class ExportConfig(BaseModel):
    """What to export and where."""

    model_config = ConfigDict(frozen=True)

    adapter: Path = Field(description="PEFT adapter folder, or a training run folder (its final/ is used)")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$", description="export name; None = run folder name")
    base_model: str | None = Field(None, description="base model; None = the adapter's base_model_name_or_path")
    out_dir: Path = Field(DEFAULT_MODELS_DIR, description="exports go to OUT/NAME/")
    evals: dict[str, Path] = Field(default_factory=dict, description="label -> eval result JSON for the card")
    merged: bool = Field(True, description="also write the merged full model")
    merged_dtype: Literal["float32", "bfloat16"] = Field("float32", description="dtype of the merged weights")
    gguf: bool = Field(False, description="also write a GGUF file (needs the merged model)")
    overwrite: bool = Field(False, description="replace an existing OUT/NAME")

    @field_validator("adapter")
    @classmethod
    def _adapter_folder(cls, path: Path) -> Path:
        path = Path(path).expanduser()
        if (RunFolder(path).final / "adapter_config.json").is_file():
            path = RunFolder(path).final
        if not (path / "adapter_config.json").is_file():
            raise ValueError(f"{path} has no adapter_config.json (expected a PEFT adapter folder or a run folder)")
        return path.resolve()

    @property
    def export_name(self) -> str:
        if self.name:
            return self.name
        folder = self.adapter.parent if self.adapter.name == FINAL_DIR else self.adapter
        return folder.name


class ExportResult(BaseModel):
    root: Path
    adapter_dir: Path
    merged_dir: Path | None
    gguf_file: Path | None


def adapter_config(adapter_dir: Path) -> dict:
    return json.loads((adapter_dir / "adapter_config.json").read_text())


def resolve_base_model(config: ExportConfig) -> str:
    """The base model as a local folder; names the field to set when it cannot be found."""
    from spelltransfer.models import resolve_model_path

    name = config.base_model or adapter_config(config.adapter).get("base_model_name_or_path") or "smollm2-135m"
    try:
        path = resolve_model_path(name)
    except ModelNotFoundError as error:
        raise ModelNotFoundError(f"base model '{name}' (from adapter_config.json base_model_name_or_path): {error}; "
                                 "pass --base-model") from error
    if not Path(path).is_dir():
        raise ModelNotFoundError(f"base model '{name}' is not a local folder; pass --base-model smollm2-135m or a folder")
    return path


def merge_adapter(base_path: str, adapter_dir: Path, out: Path, dtype: str = "float32") -> Path:
    """Fold the LoRA weights into the base model and save plain HF safetensors + tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    # Merge in fp32 so the merged weights are W + BA exactly; cast only at the end.
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    try:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except (ValueError, KeyError, RuntimeError) as error:
        raise ModelNotFoundError(f"adapter {adapter_dir} does not fit base model {base_path}: {error}") from error
    model = model.to(torch_dtype)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(out)
    return out


def export_model(config: ExportConfig) -> ExportResult:
    """Write the adapter, merged and GGUF forms with their cards; returns where they are."""
    name = config.export_name
    final = config.out_dir / name
    if final.exists() and not config.overwrite:
        raise ConfigError(f"{final} exists; pass --overwrite or another --name")
    if config.gguf and not config.merged:
        raise ConfigError("gguf=True needs merged=True (the GGUF is written from the merged weights)")
    evals = load_eval_files(config.evals)  # fail on a bad eval file before any heavy work
    base_path = resolve_base_model(config)
    lora = adapter_config(config.adapter)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    with staged_dir(final) as staging:  # an existing --overwrite folder is replaced only once all is written
        adapter_out = staging / "adapter"
        adapter_out.mkdir()
        for file in config.adapter.iterdir():
            if file.is_file() and (file.name in ADAPTER_FILES or file.suffix in {".json", ".txt", ".model"}):
                shutil.copy2(file, adapter_out / file.name)
        (adapter_out / "README.md").write_text(render_card(
            name=name, kind="adapter", base_model=base_path, adapter_config=lora, evals=evals,
            usage=f"from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n"
                  f"base = AutoModelForCausalLM.from_pretrained({base_path!r})\n"
                  f"model = PeftModel.from_pretrained(base, 'adapter')"))
        if config.merged:
            merge_adapter(base_path, config.adapter, staging / "merged", config.merged_dtype)
            (staging / "merged" / "README.md").write_text(render_card(
                name=name, kind="merged", base_model=base_path, adapter_config=lora, evals=evals,
                usage="from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                      "model = AutoModelForCausalLM.from_pretrained('merged')\n"
                      "tokenizer = AutoTokenizer.from_pretrained('merged')"))
        if config.gguf:
            from spelltransfer.serving.gguf_export import write_gguf

            (staging / "gguf").mkdir()
            write_gguf(staging / "merged", staging / "gguf" / f"{name}.gguf")
            (staging / "gguf" / "README.md").write_text(render_card(
                name=name, kind="gguf", base_model=base_path, adapter_config=lora, evals=evals,
                usage=f"from transformers import AutoModelForCausalLM\n"
                      f"model = AutoModelForCausalLM.from_pretrained('gguf', gguf_file='{name}.gguf')"))
    return ExportResult(root=final, adapter_dir=final / "adapter",
                        merged_dir=final / "merged" if config.merged else None,
                        gguf_file=final / "gguf" / f"{name}.gguf" if config.gguf else None)
