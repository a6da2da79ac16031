"""The MLflow Model Registry for adapters: a sweep's best trial becomes ``NAME@champion``.

A registered version points at the trial run's ``adapter/`` artifact folder (a PEFT adapter:
``adapter_config.json`` + weights), carries the trial's eval metrics as version tags, and the
alias ``champion`` moves to it. ``pull("NAME@champion", out)`` downloads that folder — the
thing ``spelltransfer eval --adapter`` and the inference server (vLLM ``--lora-modules``) load —
plus ``registry.json`` saying which version/run it came from.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from spelltransfer.atomic import replace_dir
from spelltransfer.registry.atomic import write_json_atomic
from spelltransfer.registry.errors import RegistryError

CHAMPION_ALIAS = "champion"
ADAPTER_ARTIFACT_PATH = "adapter"
PARENT_RUN_TAG = "mlflow.parentRunId"
# A sweep's trial row may live in another run than the training run that holds the adapter;
# this tag on the trial row names the training run (the sweep controller sets it when it knows).
TRAIN_RUN_TAG = "spelltransfer.train_run_id"
# Metrics copied onto the version as tags: what the trial scored, not its training curve.
EVAL_METRIC_PREFIXES = ("eval/", "best/", "test/", "val/", "validation/")
PROVENANCE_FILE = "registry.json"


@dataclass(frozen=True)
class RegisteredAdapter:
    name: str
    version: str
    run_id: str
    source: str
    metric: str
    value: float
    tags: dict[str, str]


def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def trial_runs(tracking_uri: str | None, sweep_run_id: str) -> list:
    """Finished child runs of a sweep's parent run."""
    client = _client(tracking_uri)
    try:
        parent = client.get_run(sweep_run_id)
    except Exception as error:  # noqa: BLE001 - MlflowException or connection error, reported as one
        raise RegistryError(f"sweep run {sweep_run_id!r} not found at {tracking_uri}: {error}") from None
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{sweep_run_id}' and attributes.status = 'FINISHED'",
        max_results=10000,
    )


def best_run(runs: list, metric: str, mode: str = "max"):
    """The run with the best final value of ``metric`` (runs without it are skipped)."""
    if mode not in {"max", "min"}:
        raise RegistryError(f"mode {mode!r}: use 'max' or 'min'")
    scored = [r for r in runs if metric in r.data.metrics and not math.isnan(r.data.metrics[metric])]
    if not scored:
        seen = sorted({key for r in runs for key in r.data.metrics})
        raise RegistryError(f"metric {metric!r}: no finished trial logged it (logged: {', '.join(seen) or 'none'})")
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r.data.metrics[metric])


def register_run(
    tracking_uri: str | None, run_id: str, name: str, *, metric: str, alias: str = CHAMPION_ALIAS,
    adapter_path: str = ADAPTER_ARTIFACT_PATH, extra_tags: dict[str, str] | None = None, metrics_from=None,
) -> RegisteredAdapter:
    """Register ``run_id``'s adapter folder as a new version of ``name`` and point ``alias`` at it.

    Version tags are the eval metrics of ``metrics_from`` (a sweep's trial row) and of the run.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise RegistryError(f"run {run_id!r}: {error.message}") from None
    listed = {info.path for info in client.list_artifacts(run_id, adapter_path)}
    if f"{adapter_path}/adapter_config.json" not in listed:
        raise RegistryError(
            f"run {run_id} has no {adapter_path}/adapter_config.json among its artifacts "
            f"({', '.join(sorted(listed)) or 'none'}); is its outbox still uploading? (a sweep trial row "
            f"must hold the adapter or name its training run in the tag {TRAIN_RUN_TAG})"
        )
    try:
        client.create_registered_model(name, description="LoRA adapters for spelltransfer (PEFT folders)")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise RegistryError(f"registered model {name!r}: {error.message}") from None
    metrics = dict(run.data.metrics)
    if metrics_from is not None and metrics_from.info.run_id != run_id:
        # The sweep's trial row logs bare names (spelling_accuracy, objective): keep them all.
        metrics.update({f"trial/{key}": value for key, value in metrics_from.data.metrics.items()})
        metrics.setdefault(metric, metrics_from.data.metrics.get(metric, float("nan")))
    tags = {key: repr(float(value)) for key, value in metrics.items()
            if key.startswith(EVAL_METRIC_PREFIXES + ("trial/",))}
    value = metrics.get(metric, float("nan"))
    tags.update({"objective.metric": metric, "objective.value": repr(float(value)), "run_name": run.info.run_name or ""})
    tags.update(extra_tags or {})
    source = f"{run.info.artifact_uri.rstrip('/')}/{adapter_path}"
    version = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
    client.set_registered_model_alias(name, alias, version.version)
    return RegisteredAdapter(name, str(version.version), run_id, source, metric, value, tags)


def register_best_trial(
    tracking_uri: str | None, sweep_run_id: str, name: str, *, metric: str, mode: str = "max",
    alias: str = CHAMPION_ALIAS, adapter_path: str = ADAPTER_ARTIFACT_PATH,
) -> RegisteredAdapter:
    """Pick the sweep's best finished trial by ``metric`` and register it as ``name@alias``."""
    runs = trial_runs(tracking_uri, sweep_run_id)
    if not runs:
        raise RegistryError(f"sweep run {sweep_run_id}: no FINISHED child runs (tag {PARENT_RUN_TAG})")
    best = best_run(runs, metric, mode)
    extra = {"sweep_run_id": sweep_run_id, "objective.mode": mode, "trials_considered": str(len(runs)),
             "trial_run_id": best.info.run_id}
    adapter_run = best.data.tags.get(TRAIN_RUN_TAG) or best.info.run_id
    result = register_run(tracking_uri, adapter_run, name, metric=metric, alias=alias, adapter_path=adapter_path,
                          extra_tags=extra, metrics_from=best)
    return result


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@alias`` → (name, alias, None); ``NAME/3`` or ``NAME:3`` → (name, None, "3")."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if name and alias:
            return name, alias, None
    for separator in ("/", ":"):
        if separator in ref:
            name, version = ref.rsplit(separator, 1)
            if name and version.isdigit():
                return name, None, version
    raise RegistryError(f"model reference {ref!r}: use NAME@ALIAS (e.g. spelling-lora@champion) or NAME/VERSION")


def pull(tracking_uri: str | None, ref: str, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Download the adapter folder of ``ref`` into ``out_dir`` (atomically: all or nothing)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    name, alias, version_number = parse_model_ref(ref)
    client = _client(tracking_uri)
    try:
        version = (client.get_model_version_by_alias(name, alias) if alias
                   else client.get_model_version(name, version_number))
    except MlflowException as error:
        raise RegistryError(f"{ref}: not found in the registry at {tracking_uri} ({error.message})") from None
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RegistryError(f"--out {out}: folder exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        local = Path(download_artifacts(artifact_uri=version.source, dst_path=tmp, tracking_uri=tracking_uri))
        if not (local / "adapter_config.json").is_file():
            raise RegistryError(f"{ref} (version {version.version}, {version.source}) has no adapter_config.json")
        write_json_atomic(local / PROVENANCE_FILE, {
            "name": name, "version": str(version.version), "alias": alias, "run_id": version.run_id,
            "source": version.source, "tags": dict(version.tags), "tracking_uri": tracking_uri,
        })
        replace_dir(local, out)  # an existing (--overwrite) folder is moved aside, then deleted
    return out


def describe(tracking_uri: str | None, name: str) -> list[dict]:
    """Every version of ``name`` with its aliases and tags (for ``registry status``)."""
    client = _client(tracking_uri)
    model = client.get_registered_model(name)
    aliases: dict[str, list[str]] = {}
    for alias, number in (model.aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    versions = client.search_model_versions(f"name = '{name}'")
    return [
        {"version": v.version, "run_id": v.run_id, "aliases": aliases.get(str(v.version), []), "tags": dict(v.tags)}
        for v in sorted(versions, key=lambda v: int(v.version))
    ]


if __name__ == "__main__":  # python -m spelltransfer.registry.model_registry NAME  → versions as JSON
    import sys

    print(json.dumps(describe(None, sys.argv[1]), indent=2))
