"""What a sweep, and then each of its trials, must pass before anything runs: sizes within the
limits, every path under the service's roots (``spelltransfer.platform.roots``), and a training
config that validates. Each check raises ConfigError naming the field."""

from __future__ import annotations

from typing import Any

from spelltransfer.errors import ConfigError
from spelltransfer.platform import limits
from spelltransfer.platform.roots import ServiceRoots
from spelltransfer.sweep.spec import SweepSpec, check_training_config, trial_overrides


def check_sweep(spec: SweepSpec, roots: ServiceRoots) -> None:
    """The spec's own paths first (before the base config is opened), then its training config."""
    check_spec_paths(spec, roots)
    check_training_config(spec)
    check_config_paths(spec, roots, "base_config/overrides", trial_overrides(spec, {}))


def check_trial(spec: SweepSpec, roots: ServiceRoots, params: dict[str, Any]) -> None:
    """One trial's parameters together: the config validates and names no path outside the roots."""
    check_training_config(spec, params)
    check_config_paths(spec, roots, "parameters", trial_overrides(spec, params))


def check_spec_paths(spec: SweepSpec, roots: ServiceRoots) -> None:
    """Every path the spec names lies under the roots, and its overrides are within the size limits:
    base_config, results_dir, storage, the W&B dir and MLflow URI, path-valued fixed overrides and
    every listed value of a path-valued parameter."""
    limits.check_overrides("overrides", spec.overrides)
    roots.check("configs", "base_config", spec.base_config)
    roots.check("results", "results_dir", spec.results_dir)
    roots.check_storage_url("storage", spec.storage)
    roots.check_tracking_uri("mlflow.tracking_uri", spec.mlflow.tracking_uri)
    if spec.wandb.dir:
        roots.check("results", "wandb.dir", spec.wandb.dir)
    for assignment in spec.overrides:
        key, _, value = assignment.partition("=")
        roots.check_setting(key.strip(), value.strip() or None, f"overrides: {key.strip()}")
    for name, parameter in spec.parameters.items():
        for value in parameter.values or []:
            limits.check_text(f"parameters.{name} value", trial_overrides(spec, {name: value})[-1],
                              limits.MAX_OVERRIDE_BYTES)
            roots.check_setting(name, value, f"parameters.{name}")


def check_config_paths(spec: SweepSpec, roots: ServiceRoots, field: str, overrides: list[str]) -> None:
    """The paths of the training config a trial would run (base config + overrides) are under the roots."""
    from spelltransfer.train.config import load_training_config

    try:
        roots.check_run_config(load_training_config(spec.base_config, overrides))
    except ConfigError as error:
        raise ConfigError(f"{field}: {error}") from None
