"""Where a run's params, metrics and artifacts are logged: MLflow and W&B, each optional."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MLFLOW_URI = "sqlite:///results/mlflow/mlflow.db"
WANDB_PROJECT = "llm-spelling-finetuning"


class MlflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, strict=True, description="Log to MLflow.")
    tracking_uri: str | None = Field(
        None, description=f"Tracking URI; null = $MLFLOW_TRACKING_URI, else {DEFAULT_MLFLOW_URI} (relative to the working directory)."
    )
    experiment: str | None = Field(None, description="MLflow experiment; null = training.experiment.")
    log_adapter: bool = Field(True, strict=True, description="Upload the final adapter folder as a run artifact.")


class WandbConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, strict=True, description="Log to Weights & Biases.")
    project: str = Field(WANDB_PROJECT, min_length=1, description="W&B project.")
    mode: Literal["offline", "online", "disabled"] | None = Field(
        None, description="null = $WANDB_MODE, else offline (works with no network)."
    )
    dir: str | None = Field(None, description="Where W&B writes its files; null = the run's output folder.")
    group: str | None = Field(None, description="W&B run group; a sweep sets its name, so its trials chart together.")


class TrackingConfig(BaseModel):
    """Both trackers; each is skipped when disabled, neither needs a network."""

    model_config = ConfigDict(extra="forbid")

    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description="MLflow settings.")
    wandb: WandbConfig = Field(default_factory=WandbConfig, description="W&B settings.")
