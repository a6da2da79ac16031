"""Real MLflow (sqlite store) and W&B (offline) logging, with no network, through a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spelltransfer.train import run_training


@pytest.fixture
def tracked_config(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    return tiny_config(
        "training.max_steps=2", "training.eval_steps=2", "training.experiment=track-test",
        "training.tracking.mlflow.enabled=true", f"training.tracking.mlflow.tracking_uri={uri}",
        "training.tracking.wandb.enabled=true", f"training.tracking.wandb.dir={tmp_path / 'wandb'}",
    ), uri


def test_run_logs_params_metrics_and_artifacts(tracked_config, tmp_path):
    from mlflow import MlflowClient

    config, uri = tracked_config
    result = run_training(config, tmp_path / "run")

    ids = json.loads((tmp_path / "run/tracking.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == str(config.optimizer.lr)
    assert run.data.params["model.lora.r"] == str(config.model.lora.r)
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [1, 2]
    assert client.get_metric_history(run.info.run_id, "eval/eval_loss")[-1].value == pytest.approx(result.final_metrics["eval_loss"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "adapter"} <= artifacts
    adapter_files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= adapter_files

    offline_runs = list((tmp_path / "wandb").glob("wandb/offline-run-*"))
    assert len(offline_runs) == 1 and ids["wandb"] in offline_runs[0].name
    assert list(offline_runs[0].glob("run-*.wandb"))


def test_resume_continues_the_same_tracker_runs(tracked_config, tmp_path):
    from mlflow import MlflowClient

    config, uri = tracked_config
    run_training(config, tmp_path / "run")
    first = json.loads((tmp_path / "run/tracking.json").read_text())
    run_training(config, tmp_path / "run", resume=True)
    second = json.loads((tmp_path / "run/tracking.json").read_text())
    assert first == second
    assert MlflowClient(tracking_uri=uri).get_run(first["mlflow"]).info.status == "FINISHED"


def test_broken_tracker_does_not_stop_training(tiny_config, tmp_path, caplog):
    # An unreachable server: MLflow's client fails; training must finish anyway.
    config = tiny_config("training.max_steps=1", "training.tracking.mlflow.enabled=true",
                         "training.tracking.mlflow.tracking_uri=http://127.0.0.1:9")
    import os
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "2"
    result = run_training(config, tmp_path / "run")
    assert result.stop_step == 1
    assert "mlflow tracker failed" in caplog.text
