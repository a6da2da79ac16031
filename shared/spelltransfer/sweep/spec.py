"""The sweep spec: what to search, how, for how long, and what "better" means.

A YAML file under ``configs/sweeps/``; parameters are training-config keys (``--set`` paths)::

    name: lora-tpe
    base_config: configs/training/config.yaml
    overrides: [training.eval_steps=100]          # fixed for every trial
    strategy: tpe                                  # grid | random | tpe
    objective: mean_transfer                       # spelling | position | count | mean_transfer
    max_trials: 20
    parameters:
      model.lora.r: {type: int, low: 4, high: 32, log: true}
      optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
      training.batch_size: {values: [4, 8, 16, 32]}

Every error names the field (``parameters.optimizer.lr.low: must be < high``); ``validate_spec``
also checks the base config and that every parameter key exists in it, so nothing starts with a
spec that would fail on the first trial.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from spelltransfer.errors import ConfigError, format_validation_error, short_repr
from spelltransfer.safe_yaml import load_yaml, read_yaml_text
from spelltransfer.track.config import WANDB_PROJECT

Objective = Literal["spelling", "position", "count", "mean_transfer"]


class ParameterSpec(BaseModel):
    """One searched value: a range (``low``/``high``, optional ``log`` or ``step``) or explicit ``values``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["int", "float", "categorical"] | None = Field(
        None, description="int | float | categorical; null = categorical when values are given, else float.")
    low: float | None = Field(None, strict=True, description="Lower bound (inclusive).")
    high: float | None = Field(None, strict=True, description="Upper bound (inclusive).")
    log: bool = Field(False, strict=True, description="Sample on a log scale (ranges only).")
    step: float | None = Field(None, strict=True, gt=0, description="Grid step for int/float ranges (needed by strategy: grid for floats).")
    values: list[Any] | None = Field(None, min_length=1, description="Explicit choices (categorical or a grid).")

    @model_validator(mode="after")
    def _check(self) -> "ParameterSpec":
        if self.values is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either values or low/high, not both")
            if self.type not in (None, "categorical"):
                raise ValueError("values makes a categorical parameter; drop type or set type: categorical")
            return self
        if self.type == "categorical":
            raise ValueError("categorical parameters need values")
        if self.low is None or self.high is None:
            raise ValueError("a range needs low and high (or give values)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("int ranges need whole-number low and high")
        return self

    @property
    def kind(self) -> str:
        if self.values is not None:
            return "categorical"
        return self.type or "float"

    def grid_values(self, name: str) -> list[Any]:
        """The finite list a grid search walks; raises ConfigError when the range is continuous."""
        if self.values is not None:
            return list(self.values)
        if self.kind == "int":
            step = int(self.step or 1)
            if self.log:  # powers of two between low and high: the usual grid for ranks and batch sizes
                values, value = [], int(self.low)
                while value <= self.high:
                    values.append(value)
                    value *= 2
                return values
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is None:
            raise ConfigError(f"parameters.{name}: strategy grid needs values or a step for a float range")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def sample_value(self) -> Any:
        """One valid value (the lower bound or the first choice), used to check the key exists."""
        if self.values is not None:
            return self.values[0]
        return int(self.low) if self.kind == "int" else self.low


class PrunerSpec(BaseModel):
    """Stop poor trials early from their intermediate validation objective (reported at each eval)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["none", "asha", "hyperband"] = Field("none", description="asha = successive halving; hyperband.")
    min_resource: int = Field(1, strict=True, ge=1, description="Training steps before a trial can be pruned.")
    max_resource: StrictInt | Literal["auto"] = Field("auto", description="Hyperband: steps of the longest trial.")
    reduction_factor: int = Field(3, strict=True, ge=2, description="Keep 1/reduction_factor of trials at each rung.")
    metric: Literal["eval_loss", "accuracy", "objective"] = Field(
        "eval_loss", description="Intermediate value from each eval event: eval_loss (reported negated, the study "
        "maximises; always present), accuracy (the trainer's validation-sample accuracy; needs "
        "training.early_stopping.metric=accuracy) or objective (the sweep objective, when eval events carry per-task accuracies).")


class DesignSpec(BaseModel):
    """The first ``trials`` trials of a new study: a balanced design enqueued before the sampler
    takes over (``spelltransfer.sweep.design``), so every value of every parameter is tried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["none", "balanced"] = Field("none", description="balanced = each value of each parameter equally "
                                              "often, pairs of values as evenly as the seed search finds.")
    trials: int = Field(0, strict=True, ge=0, le=10000, description="Design trials enqueued (then the sampler, e.g. TPE).")
    seed: int = Field(0, strict=True, ge=0, description="Seed of the design's search.")


class MlflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, strict=True, description="Log a parent run per sweep and a child run per trial.")
    tracking_uri: str | None = Field(None, description="null = $MLFLOW_TRACKING_URI, else the trainer's default.")
    experiment: str | None = Field(None, description="null = sweeps/<name>.")


class WandbSpec(BaseModel):
    """A W&B run per sweep, written when it ends: the trials as a table, the analysis and its figures.
    (Each trial's own W&B runs are grouped under the sweep's name either way.)"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, strict=True, description="Log the sweep's summary run to W&B at its end.")
    project: str = Field(WANDB_PROJECT, min_length=1, description="W&B project (the trials' default too).")
    mode: Literal["offline", "online", "disabled"] | None = Field(
        None, description="null = $WANDB_MODE, else offline (sync later with `wandb sync`).")
    dir: str | None = Field(None, description="Where W&B writes its files; null = RESULTS_DIR.")


class RegistrySpec(BaseModel):
    """Register the best trial's adapter in the MLflow Model Registry when the sweep completes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, strict=True, description="Register NAME@alias at the end (needs mlflow.enabled and an MLflow server).")
    model_name: str = Field("spelling-lora", min_length=1, description="Registered model name.")
    metric: str = Field("objective", min_length=1, description="Trial-row metric that picks the best trial.")
    mode: Literal["max", "min"] = Field("max", description="Best = highest (max) or lowest (min) metric.")
    alias: str = Field("champion", min_length=1, description="Alias moved to the new version.")


class SweepSpec(BaseModel):
    """A whole sweep; immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="Sweep (and Optuna study) name; results go to results/metrics/<name>/.")
    base_config: str = Field("configs/training/config.yaml", min_length=1,
                             description="Training config every trial starts from (path on the workers).")
    overrides: list[str] = Field(default_factory=list, description="key=value applied to every trial.")
    parameters: dict[str, ParameterSpec] = Field(..., min_length=1, description="Training-config key -> search space.")
    strategy: Literal["grid", "random", "tpe"] = Field("tpe", description="Optuna sampler.")
    seed: int = Field(0, strict=True, ge=0, description="Sampler seed.")
    objective: Objective = Field("mean_transfer", description="Validation accuracy to maximise; mean_transfer = mean of position and count.")
    max_trials: int = Field(10, strict=True, ge=1, le=10000, description="Trials to run (grid: at most the grid size).")
    evaluate: Literal["auto", "always", "never"] = Field(
        "auto", description="Evaluate each trained adapter on the validation split (spelltransfer eval) for the "
        "three accuracies; auto = only when the trainer's metrics.json lacks them.")
    max_retries: int = Field(1, strict=True, ge=0, le=10, description="Times a failed trial is run again before it counts as FAIL.")
    parallelism: int | None = Field(None, strict=True, ge=1, description="Trials running at once; null = every free worker slot.")
    worker_lost_s: float = Field(300.0, strict=True, gt=0, description="A trial whose worker is unreachable this long is retried elsewhere.")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec, description="Early stopping of poor trials.")
    design: DesignSpec = Field(default_factory=DesignSpec, description="Balanced first trials of a new study.")
    max_micro_steps: int | None = Field(
        None, strict=True, ge=1, description="Cap each trial's micro-batches (training.max_steps x grad_accum): a trial "
        "over it trains max_steps = cap // grad_accum (a shorter schedule; trials.csv says which were capped). null = no cap.")
    storage: str | None = Field(None, description="Optuna RDB URL (sqlite:///..., postgresql://...); null = SQLite in the controller's state dir.")
    results_dir: str = Field("results", min_length=1, description="trials.csv goes to RESULTS_DIR/metrics/<name>/.")
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec, description="MLflow parent/child runs.")
    wandb: WandbSpec = Field(default_factory=WandbSpec, description="W&B summary run of the sweep.")
    registry: RegistrySpec = Field(default_factory=RegistrySpec, description="Model Registry: the champion.")

    @model_validator(mode="after")
    def _check(self) -> "SweepSpec":
        for key in self.parameters:
            if key.count(".") < 1:
                raise ValueError(f"parameters.{key}: use a dotted training-config key, e.g. optimizer.lr")
        for assignment in self.overrides:
            if "=" not in assignment:
                raise ValueError(f"overrides: {assignment!r} is not key=value")
        if self.registry.enabled and not self.mlflow.enabled:
            raise ValueError("registry.enabled: needs mlflow.enabled (the champion is picked from the MLflow trial runs)")
        if self.design.kind == "balanced":
            if self.design.trials < 1:
                raise ValueError("design.trials: a balanced design needs >= 1 trial")
            if self.strategy == "grid":
                raise ValueError("design: strategy grid walks its own grid; use tpe or random after a design")
            if self.design.trials > self.max_trials:
                raise ValueError(f"design.trials ({self.design.trials}) must be <= max_trials ({self.max_trials})")
            for name, parameter in self.parameters.items():
                if parameter.values is None and not (parameter.kind == "int" or parameter.step is not None):
                    raise ValueError(f"parameters.{name}: a balanced design needs values, an int range or a step")
        if self.storage and not self.storage.startswith(("sqlite:///", "postgresql", "mysql")):
            raise ValueError(f"storage: expected sqlite:///PATH or postgresql://... (got {short_repr(self.storage)})")
        return self

    def grid(self) -> dict[str, list[Any]]:
        return {name: spec.grid_values(name) for name, spec in self.parameters.items()}

    def trial_count(self) -> int:
        """max_trials, capped at the grid size for grid search (a grid never repeats a point)."""
        if self.strategy != "grid":
            return self.max_trials
        return min(self.max_trials, math.prod(len(v) for v in self.grid().values()))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_spec(text: str, source: str = "sweep spec") -> SweepSpec:
    """YAML text -> SweepSpec; ConfigError names the file and field (values cut short, keys that are
    not plain names described, not shown)."""
    data = load_yaml(text, source)  # bounded; refuses alias bombs, duplicate keys, odd tags
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping (name, parameters, ...)")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {format_validation_error(error, root='spec')}") from None


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} does not exist")
    return parse_spec(read_yaml_text(path), source=str(path))


def check_training_config(spec: SweepSpec, params: dict[str, Any] | None = None) -> None:
    """The base config with the fixed overrides and the parameters must validate.

    Without ``params`` each parameter is checked alone with one sample value, so the error names
    the parameter (``parameters.model.lora.rank: unknown key ...``); with ``params`` (one trial's
    values) they are checked together, catching combinations such as batch_size % grad_accum.
    """
    from spelltransfer.train.config import load_training_config

    def check(field: str, assignments: list[str]) -> None:
        try:
            load_training_config(spec.base_config, assignments)
        except ConfigError as error:
            raise ConfigError(f"{field}: {error}") from None

    if params is not None:
        check("parameters", trial_overrides(spec, params))
        return
    check("base_config/overrides", list(spec.overrides))
    if spec.strategy == "grid":
        spec.grid()  # raises for a continuous float range
    for name, parameter in spec.parameters.items():
        check(f"parameters.{name}", trial_overrides(spec, {name: parameter.sample_value()}))


# Not a training-config key: the per-micro-batch size. A trial with it trains
# ``training.batch_size = micro_batch_size x training.grad_accum`` (the effective batch), the
# project's batch_size being examples per optimizer step.
MICRO_BATCH_KEY = "training.micro_batch_size"


def trial_overrides(spec: SweepSpec, params: dict[str, Any]) -> list[str]:
    """--set assignments for one trial: its W&B group (the sweep), the sweep's fixed overrides, then
    its parameters (``training.micro_batch_size`` becomes ``training.batch_size``, see MICRO_BATCH_KEY;
    ``max_micro_steps`` may lower ``training.max_steps``)."""
    params = dict(params)
    accum = int(params.get("training.grad_accum", _fixed(spec.overrides, "training.grad_accum", 1)))
    if MICRO_BATCH_KEY in params:
        params["training.batch_size"] = int(params.pop(MICRO_BATCH_KEY)) * accum
    steps = params.get("training.max_steps", _fixed(spec.overrides, "training.max_steps", None))
    if spec.max_micro_steps is not None and steps is not None and int(steps) * accum > spec.max_micro_steps:
        params["training.max_steps"] = max(1, spec.max_micro_steps // accum)
    return ([f"training.tracking.wandb.group={spec.name}", *spec.overrides]
            + [f"{key}={_yaml_scalar(value)}" for key, value in params.items()])


def _fixed(overrides: list[str], key: str, default: Any) -> Any:
    """The last fixed ``key=value`` of ``overrides`` (YAML-parsed), or ``default``."""
    value = default
    for assignment in overrides:
        name, _, text = assignment.partition("=")
        if name.strip() == key:
            value = yaml.safe_load(text)
    return value


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)
