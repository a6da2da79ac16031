"""S3 goes down mid-run with uploads queued; the uploader process restarts; S3 comes back.

Every artifact must arrive and be verified: the outbox keeps its local copies while S3 is down
(attempts and errors recorded, backoff growing), survives a new ``Outbox`` on the same folder
(a restarted trainer), and after S3 is back uploads everything; the bucket, listed with boto3,
holds each file with its local size and MD5, and the outbox has removed its copies.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from spelltransfer.registry import processes, s3
from spelltransfer.registry.outbox import Outbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_s3_outage_mid_run_every_artifact_arrives_verified(live_stack, mlflow_client, tmp_path, capfd):
    client = mlflow_client
    stack = live_stack.stack()
    experiment_id = client.create_experiment("outage")
    run_id = client.create_run(experiment_id, run_name="trial-outage").info.run_id
    outbox_dir = tmp_path / "outbox"
    files: dict[str, Path] = {}

    def produce(step: int) -> None:
        """What a trainer writes at a checkpoint: a folder and a metrics file."""
        folder = tmp_path / "run" / f"step-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(os.urandom(300_000 + step))
        (folder / "trainer_state.json").write_text(f'{{"step": {step}}}')
        files[f"checkpoints/step-{step}/adapter_model.safetensors"] = folder / "adapter_model.safetensors"
        files[f"checkpoints/step-{step}/trainer_state.json"] = folder / "trainer_state.json"
        outbox.submit(folder, run_id, f"checkpoints/step-{step}")
        client.log_metric(run_id, "train/loss", 1.0 / step, step=step)  # MLflow itself stays up

    outbox = Outbox(outbox_dir, live_stack.tracking_uri, base_delay_s=0.3, max_delay_s=1.5, request_timeout_s=15)
    produce(1)
    assert outbox.flush(timeout=60), outbox.stats()

    s3_record = stack.read_state()["s3"]
    assert stack.stop_s3()
    assert not processes.is_running(s3_record)
    try:
        for step in (2, 3, 4):
            produce(step)
        # Uploads fail and are retried with backoff; nothing is lost meanwhile.
        _wait(lambda: all(m["attempts"] >= 2 for m in outbox.pending()) and len(outbox.pending()) == 3,
              90, "three failed attempts per queued entry")
        pending = outbox.pending()
        assert all(m["last_error"] for m in pending)
        with capfd.disabled():
            print("\nwhile S3 is down:", outbox.stats())
        assert outbox.stats().pending_files == 6
        # The training process "restarts": its outbox thread goes away with entries still queued.
        assert outbox.close(timeout=0) is False
        for manifest in pending:
            for item in manifest["files"]:
                assert (outbox_dir / "entries" / manifest["id"] / "payload" / item["local"]).is_file()
        # ... and the checkpoints the trainer rotated away are no longer on its disk at all.
        for step in (2, 3):
            for path in (tmp_path / "run" / f"step-{step}").iterdir():
                path.unlink()
    finally:
        down_for = time.monotonic()
        status = stack.start_s3()  # same ports, same data dir
        assert status.s3_running and status.mlflow_running
    # A new process (new Outbox on the same folder) finishes the job.
    started = time.monotonic()
    with Outbox(outbox_dir, live_stack.tracking_uri, base_delay_s=0.3, max_delay_s=1.5) as restarted:
        assert restarted.flush(timeout=120), restarted.stats()
        receipts = restarted.receipts()
    with capfd.disabled():
        print(f"S3 restart took {started - down_for:.1f} s; queue drained and verified in "
              f"{time.monotonic() - started:.1f} s; attempts per entry: {[r['attempts'] for r in receipts]}")
    assert len(receipts) == 4
    assert sum(r["attempts"] for r in receipts) >= 6
    assert not list((outbox_dir / "entries").iterdir())

    objects = s3.list_objects(live_stack.s3_endpoint_url, live_stack.credentials(), live_stack.bucket,
                              prefix=f"{experiment_id}/{run_id}/artifacts/")
    by_key = {o["key"].split("/artifacts/", 1)[1]: o for o in objects}
    assert set(by_key) == set(files)
    assert {item["remote"] for receipt in receipts for item in receipt["files"]} == set(files)
    for receipt in receipts:  # receipts carry the submit-time sha256 of every file, all verified
        assert all(item["done"] and item["verified_at"] for item in receipt["files"])
    for key in ("checkpoints/step-1/adapter_model.safetensors", "checkpoints/step-4/adapter_model.safetensors"):
        assert by_key[key]["etag"] == hashlib.md5(files[key].read_bytes()).hexdigest()
    sizes = {r["remote"]: r["size"] for receipt in receipts for r in receipt["files"]}
    assert all(by_key[key]["size"] == sizes[key] for key in files)
    # Step 2-3 files exist only in S3 now; their bytes must match what was submitted.
    downloaded = client.download_artifacts(run_id, "checkpoints/step-2", str(tmp_path / "dl"))
    shas = {r["remote"]: r["sha256"] for receipt in receipts for r in receipt["files"]}
    for path in Path(downloaded).iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shas[f"checkpoints/step-2/{path.name}"]
    assert live_stack.secret not in capfd.readouterr().out
