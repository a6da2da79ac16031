"""A sweep through the real platform ends with ``NAME@champion`` in the real Model Registry.

Two trials of the tiny model (a few steps each) run on two local trainer workers behind a local
controller (real gRPC), logging to the live MLflow server (artifacts in ``weed mini`` S3, through
the outbox) and to W&B offline. At the end the controller registers the best trial: the sweep's
child rows carry ``spelltransfer.train_run_id``, the version carries the eval metrics as tags,
and ``registry pull NAME@champion`` gives a loadable adapter folder.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import struct
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _platform_helpers():
    """The platform tests' tiny-trial settings (tests/platform/conftest.py), shared, not copied."""
    path = Path(__file__).resolve().parents[1] / "platform" / "conftest.py"
    spec = importlib.util.spec_from_file_location("platform_conftest_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wandb_run_record(path: Path):
    """The ``run`` record of an offline ``run-*.wandb`` file (LevelDB-log framing of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, buffer = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buffer = chunk if kind in (1, 2) else buffer + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buffer)
            if record.WhichOneof("record_type") == "run":
                return record.run
    raise AssertionError(f"{path}: no run record")


def test_sweep_registers_champion(live_stack, mlflow_client, tiny_model_path, tmp_path, monkeypatch, repo_root):
    from transformers import AutoTokenizer

    from spelltransfer.data import build_dataset
    from spelltransfer.registry import s3
    from spelltransfer.registry.model_registry import TRAIN_RUN_TAG
    from spelltransfer.sweep.local import run_local_sweep

    helpers = _platform_helpers()
    data = tmp_path / "data"
    build_dataset(data, tokenizer=AutoTokenizer.from_pretrained(tiny_model_path), seed=0, **helpers.SMALL_DATA)
    overrides = [o for o in helpers._trial_overrides(tiny_model_path, str(data), max_steps=4, save_steps=2)
                 if not o.startswith("training.tracking.")]
    overrides += ["training.tracking.mlflow.enabled=true", "training.tracking.wandb.enabled=true",
                  "training.tracking.wandb.mode=offline", f"training.plot_dir={tmp_path / 'plots'}",
                  "training.experiment=champion-test"]
    name = "champ-" + secrets.token_hex(3)
    model_name = f"{name}-lora"
    spec = {"name": name, "base_config": str(Path(repo_root) / "configs" / "training" / "config.yaml"),
            "overrides": overrides, "strategy": "grid", "max_trials": 2, "evaluate": "always", "objective": "spelling",
            "parameters": {"optimizer.lr": {"values": [1e-3, 2e-3]}}, "results_dir": str(tmp_path / "results"),
            "mlflow": {"enabled": True, "experiment": f"sweeps-{name}"},
            "registry": {"enabled": True, "model_name": model_name}}
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    for key in ("SPELLTRANSFER_REGISTRY_HOME", "SPELLTRANSFER_S3_BUCKET"):
        monkeypatch.setenv(key, live_stack.env[key])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live_stack.tracking_uri)
    monkeypatch.setenv("WANDB_MODE", "offline")

    final = run_local_sweep(spec_path, n_workers=2, work_dir=tmp_path / "platform")
    assert [t.state for t in final.trials] == ["COMPLETE", "COMPLETE"], final

    # Each trial row in MLflow names the trainer run that holds its adapter.
    parent = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name(f"sweeps-{name}").experiment_id],
        filter_string=f"tags.`spelltransfer.sweep` = '{name}' and attributes.run_name = '{name}'")[0]
    rows = mlflow_client.search_runs([parent.info.experiment_id],
                                     filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(rows) == 2
    train_runs = {row.data.tags[TRAIN_RUN_TAG] for row in rows}
    # A trainer waits a bounded time for its uploads and leaves the rest queued (track/mlflow_tracker.py);
    # drain what is left as `spelltransfer registry outbox drain` would, then check.
    from spelltransfer.registry.outbox import outbox_for

    box = outbox_for(live_stack.tracking_uri)
    assert box is None or box.flush(90), f"artifacts still queued: {box.stats()}"
    for run_id in train_runs:
        listed = {a.path for a in mlflow_client.list_artifacts(run_id, "adapter")}
        assert "adapter/adapter_config.json" in listed

    # S3 holds each trainer run's adapter (uploaded through the outbox and MLflow's proxy).
    keys = [o["key"] for o in s3.list_objects(live_stack.s3_endpoint_url, live_stack.credentials(), live_stack.bucket)]
    for run_id in train_runs:
        assert any(f"/{run_id}/artifacts/adapter/adapter_model.safetensors" in key for key in keys)
    print("\n".join(f"s3://{live_stack.bucket}/{key}" for key in keys if any(r in key for r in
                                                                             (*train_runs, parent.info.run_id))))

    # The champion: alias, eval metrics as version tags, provenance.
    version = mlflow_client.get_model_version_by_alias(model_name, "champion")
    assert version.run_id in train_runs
    assert version.tags["sweep_run_id"] == parent.info.run_id
    assert version.tags["objective.metric"] == "objective"
    assert any(key.startswith(("eval/", "best/")) for key in version.tags), version.tags
    assert "trial/spelling_accuracy" in version.tags and "trial/objective" in version.tags
    best_row = next(r for r in rows if r.data.tags[TRAIN_RUN_TAG] == version.run_id)
    assert float(version.tags["objective.value"]) == best_row.data.metrics["objective"]

    # `registry pull NAME@champion` gives the adapter folder.
    out = tmp_path / "champion"
    live_stack.cli("registry", "pull", f"{model_name}@champion", "--out", str(out))
    assert (out / "adapter_config.json").is_file()
    assert json.loads((out / "registry.json").read_text())["version"] == str(version.version)

    # W&B offline, beside it: per trial a training run and a validation run with the predictions table.
    runs = sorted((tmp_path / "platform").glob("worker*/runs/*/wandb/offline-run-*"))
    assert len(runs) == 4, runs
    records = [_wandb_run_record(next(run.glob("run-*.wandb"))) for run in runs]
    assert {r.run_group for r in records} == {name}
    assert sorted(r.job_type for r in records) == ["train", "train", "validation", "validation"]
    tables = list((tmp_path / "platform").glob("worker*/runs/*/wandb/offline-run-*/files/media/table/**/*.table.json"))
    assert len(tables) == 2, tables
    assert json.loads(tables[0].read_text())["columns"][:4] == ["task", "word", "prompt", "gold"]
