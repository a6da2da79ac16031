"""A full round trip with a distinctive S3 secret; the secret must appear in no log or output.

Runs last among the registry tests (file order), so the scan also covers everything the other
tests made the servers log: `registry up` output, weed's and MLflow's logs, the state file, the
sqlite store, the S3 data dir, outbox manifests and receipts, and all captured CLI output.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from spelltransfer.registry import model_registry
from spelltransfer.registry.outbox import Outbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits


def test_round_trip_never_logs_the_secret(live_stack, mlflow_client, tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    secret = live_stack.secret
    assert len(secret) > 20 and secret in live_stack.env.values()

    status = live_stack.cli("registry", "status", "--json")
    assert '"mlflow_running": true' in status.stdout
    live_stack.cli("registry", "env")

    experiment_id = mlflow_client.create_experiment("secrets")
    run_id = mlflow_client.create_run(experiment_id, run_name="trial-secret").info.run_id
    mlflow_client.log_metric(run_id, "eval/spelling_accuracy", 0.9, step=1)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 2, "peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(os.urandom(2048))
    outbox_dir = tmp_path / "outbox"
    with Outbox(outbox_dir, live_stack.tracking_uri, base_delay_s=0.2, max_delay_s=1) as outbox:
        outbox.submit(adapter, run_id, "adapter")
        assert outbox.flush(timeout=60)
    mlflow_client.set_terminated(run_id)
    model_registry.register_run(live_stack.tracking_uri, run_id, "secret-check", metric="eval/spelling_accuracy")
    live_stack.cli("registry", "pull", "secret-check@champion", "--out", str(tmp_path / "pulled"),
                   "--tracking-uri", live_stack.tracking_uri)
    live_stack.cli("registry", "outbox", "status", "--dir", str(outbox_dir))

    needle = secret.encode()
    # Logs, state, db, S3 data, outbox receipts, pulled folder: nothing on disk holds the secret.
    log_files = list((live_stack.home / "logs").glob("*.log"))
    assert {p.name for p in log_files} >= {"s3.log", "mlflow.log"}
    assert all(p.stat().st_size > 0 for p in log_files)
    assert _files_containing(live_stack.home, needle) == []
    assert _files_containing(tmp_path, needle) == []
    # Captured output of every CLI call this session (up, status, register, pull, errors...).
    assert live_stack.outputs and not [out for out in live_stack.outputs if secret in out]
    captured = capfd.readouterr()
    assert secret not in captured.out and secret not in captured.err
    assert not [r for r in caplog.records if secret in r.getMessage()]
