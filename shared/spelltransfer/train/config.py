"""The training run's configuration: five YAML files, merged, overridden, validated once.

``configs/training/config.yaml`` holds the run (seed, data, steps, intervals, early stopping,
tracking) and names the other four files under ``configs:`` (paths relative to it). The merged
result has one section per concern — ``training``, ``model``, ``optimizer``, ``scheduler``,
``transfer`` — and ``--set section.key=value`` addresses a field by its dotted path. A resolved
config (as saved to ``DIR/config.yaml``) is the same five sections inline and loads the same way.

Every error names the field: ``ConfigError: training.max_steps: must be >= 1 (got 0)``.

Defaults have one owner: the pydantic fields below and in the section models (``ModelConfig``,
``OptimizerConfig``, ``SchedulerConfig``, ``TransferConfig``, ``SweepSpec`` for configs/sweeps/).
A shipped YAML under ``configs/`` restates a default or overrides it on purpose, and an override
says so on its line with a comment starting ``# override``::

    max_steps: 2000           # override: the recipe trains 8x longer than the default

``tests/test_config_defaults.py`` fails on any other difference. Views of this config (the packed
trainer's ``TrialSpec``) take their defaults and bounds from these fields, never their own.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spelltransfer.errors import ConfigError, format_validation_error, shorten, short_repr, shown_key
from spelltransfer.safe_yaml import YamlSyntaxError, load_yaml, load_yaml_file
from spelltransfer.track.config import TrackingConfig
from spelltransfer.train.data_config import TransferConfig
from spelltransfer.train.early_stopping import EarlyStoppingConfig
from spelltransfer.train.model_config import ModelConfig
from spelltransfer.train.optim import OptimizerConfig, SchedulerConfig

DEFAULT_CONFIG = Path("configs/training/config.yaml")
SECTIONS = ("training", "model", "optimizer", "scheduler", "transfer")


class TrainingConfig(BaseModel):
    """The run itself (configs/training/config.yaml, minus its ``configs:`` file list)."""

    model_config = ConfigDict(extra="forbid")

    experiment: str = Field("spelling-lora", min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="Experiment name (folder and tracker experiment).")
    run_name: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$", description="Run name; null = a UTC timestamp.")
    seed: int = Field(1234, strict=True, ge=0, description="Seed for data order, LoRA init and dropout.")
    backend: Literal["auto", "hf", "unsloth"] = Field("auto", description="auto = unsloth when CUDA and the package are present, else hf.")
    data_dir: str = Field("data/spelling", min_length=1, description="Dataset folder with train.jsonl and validation.jsonl.")
    train_limit: int | None = Field(None, strict=True, ge=1, description="Use at most this many training examples; null = all.")
    max_steps: int = Field(250, strict=True, ge=1, description="Optimizer steps to train; 250 = ~21 min on 2 CPU cores "
                           "at batch 16 with the bundled 135M model.")
    batch_size: int = Field(16, strict=True, ge=1, description="Examples per optimizer step (per micro-batch times grad_accum).")
    grad_accum: int = Field(1, strict=True, ge=1, description="Micro-batches per optimizer step; batch_size must divide by it.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="Compute: bf16 autocast or fp32; auto = bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32.")
    num_threads: int | None = Field(None, strict=True, ge=1, description="torch CPU threads; null = torch's default.")
    logging_steps: int = Field(1, strict=True, ge=1, description="Write a step event every N steps.")
    eval_steps: int = Field(50, strict=True, ge=1, description="Evaluate on the validation sample every N steps; 50 = "
                            "every checkpoint (save_steps), so early stopping sees 5 evaluations in 250 steps.")
    eval_samples: int = Field(64, strict=True, ge=1, description="Validation examples used for eval loss / accuracy.")
    eval_batch_size: int = Field(32, strict=True, ge=1, description="Batch size for validation loss and generation.")
    save_steps: int = Field(50, strict=True, ge=1, description="Write a checkpoint every N steps.")
    keep_last: int = Field(2, strict=True, ge=1, description="Checkpoints kept besides the best one.")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig, description="Early stopping on a validation metric.")
    plot_dir: str = Field("results/training_logs", min_length=1, description="Where the metric-by-step plot goes.")
    output_root: str = Field("checkpoints", min_length=1, description="Runs go to OUTPUT_ROOT/<experiment>/<run_name> unless --output-dir is given.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow and W&B logging.")

    @model_validator(mode="after")
    def _check(self) -> "TrainingConfig":
        check_batch_split(self.batch_size, self.grad_accum)
        return self


def check_batch_split(batch_size: int, grad_accum: int) -> None:
    """``batch_size`` examples a step in ``grad_accum`` equal micro-batches (also a packed trial's rule)."""
    if batch_size % grad_accum:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by grad_accum ({grad_accum})")


class RunConfig(BaseModel):
    """All five sections; immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    training: TrainingConfig = Field(default_factory=TrainingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for tracker params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, item in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, item)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = load_yaml_file(path)  # bounded; refuses alias bombs, duplicate keys, odd tags
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of keys to values (got {type(data).__name__})")
    return data


def _merge_files(path: Path) -> dict:
    """Raw merged sections from a top-level training config or a resolved one."""
    data = _read_yaml(path)
    if "training" in data:  # a resolved config: sections inline
        unknown = sorted(str(key) for key in set(data) - set(SECTIONS))
        if unknown:
            shown = ", ".join(shown_key(key) for key in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise ConfigError(f"{path}: unknown section(s) {shown} (known: {', '.join(SECTIONS)})")
        return copy.deepcopy(data)
    files = data.pop("configs", None) or {}
    if not isinstance(files, dict):
        raise ConfigError(f"{path}: configs: must map section names to YAML files")
    merged: dict[str, Any] = {"training": data}
    for section, relative in files.items():
        if section not in SECTIONS or section == "training":
            raise ConfigError(f"{path}: configs.{shown_key(section)}: unknown section (known: model, optimizer, scheduler, transfer)")
        merged[section] = _read_yaml((path.parent / str(relative)).resolve())
    return merged


def _apply_override(merged: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {short_repr(assignment)}: expected key=value, e.g. training.max_steps=100")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if parts[0] not in SECTIONS or len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {shorten(key)}: keys start with a section ({', '.join(SECTIONS)}), e.g. training.max_steps")
    # Walk the schema so an unknown key is named even when the YAML left the section out.
    schema: Any = RunConfig
    for depth, part in enumerate(parts):
        fields = getattr(schema, "model_fields", None)
        if fields is None or part not in fields:
            prefix = ".".join(parts[:depth]) or "config"
            known = ", ".join(sorted(fields)) if fields else "none (not a section)"
            raise ConfigError(f"--set {shorten(key)}: unknown key '{shorten(part)}' in {prefix} (known: {known})")
        annotation = fields[part].annotation
        schema = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    try:
        value = load_yaml(raw, source=f"--set {shorten(key)}")
    except YamlSyntaxError:
        value = raw  # not YAML: the text itself (a string field validates it)
    node = merged
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {shorten(key)}: {shown_key(part)} is not a section")
    node[parts[-1]] = value


def validate_config(merged: dict, source: str = "config") -> RunConfig:
    """Validate merged sections; raise ConfigError listing every bad field by dotted path."""
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(f"{source}: {format_validation_error(error)}") from None


def load_training_config(path: str | Path = DEFAULT_CONFIG, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read the config files, apply ``section.key=value`` overrides, validate once."""
    path = Path(path)
    merged = _merge_files(path)
    for assignment in overrides:
        _apply_override(merged, assignment)
    return validate_config(merged, source=str(path))
