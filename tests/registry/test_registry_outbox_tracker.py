"""The training engine's tracker sends artifacts through the outbox; an S3 outage stops nothing.

``spelltransfer.track``'s MLflow tracker, pointed at the live server, hands files to the shared
outbox (``SPELLTRANSFER_OUTBOX_DIR``): with S3 down, ``log_artifact`` and ``finish`` return, the
tracker stays enabled, the run is FINISHED in MLflow, and the files wait on disk; after S3 is
back, `spelltransfer registry outbox drain` delivers them, verified. W&B logs the same run offline.
"""

from __future__ import annotations

import json
import time

import pytest

from spelltransfer.registry import s3

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_tracker_artifacts_survive_an_s3_outage(live_stack, mlflow_client, tmp_path, monkeypatch):
    from spelltransfer.track import build_tracker
    from spelltransfer.track.config import TrackingConfig

    monkeypatch.setenv("SPELLTRANSFER_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("SPELLTRANSFER_OUTBOX_FLUSH_S", "3")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("experiment: tracker\n")
    (run_dir / "metrics.json").write_text(json.dumps({"best": {"spelling_accuracy": 0.5}}))
    adapter = run_dir / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 4, "peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\1" * 4096)

    config = TrackingConfig.model_validate({"mlflow": {"tracking_uri": live_stack.tracking_uri}})
    tracker = build_tracker(config, "tracker-outage", run_dir)
    ids = tracker.start("trial-tracker", {"lora.r": 4}, {"backend": "hf"})
    assert set(ids) == {"mlflow", "wandb"}
    tracker.log_metrics({"train/loss": 1.5}, 1)

    stack = live_stack.stack()
    stack.stop_s3()
    try:
        started = time.monotonic()
        tracker.log_artifact(run_dir / "metrics.json")
        tracker.log_artifact(run_dir / "config.yaml")
        tracker.log_artifact(adapter, "adapter")
        tracker.log_metrics({"eval/spelling_accuracy": 0.5}, 2)
        tracker.finish("FINISHED")
        assert time.monotonic() - started < 60
        assert {t.name for t in tracker.trackers} == {"mlflow", "wandb"}, "an S3 outage must not disable tracking"
        run = mlflow_client.get_run(ids["mlflow"])
        assert run.info.status == "FINISHED" and run.data.metrics["eval/spelling_accuracy"] == 0.5
        pending = list((tmp_path / "outbox" / "entries").iterdir())
        assert len(pending) == 3
    finally:
        stack.start_s3()

    live_stack.cli("registry", "outbox", "drain", "--dir", str(tmp_path / "outbox"), "--timeout", "120")
    experiment_id = run.info.experiment_id
    objects = s3.list_objects(live_stack.s3_endpoint_url, live_stack.credentials(), live_stack.bucket,
                              prefix=f"{experiment_id}/{ids['mlflow']}/artifacts/")
    keys = {o["key"].split("/artifacts/", 1)[1] for o in objects}
    assert keys == {"metrics.json", "config.yaml", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}
    assert not list((tmp_path / "outbox" / "entries").iterdir())
    # W&B beside it: an offline run folder that `wandb sync` can upload later.
    assert list(run_dir.rglob("offline-run-*")), "no offline W&B run folder"
