"""A trainer worker in pack mode (``slots=K, pack_size=K``): K trials train as one packed process.

Real services on 127.0.0.1 (controller and trainer over gRPC, in this process), real pack
processes (``python -m spelltransfer.train.packed.job``), the tiny model: a 3-trial sweep lands in
ONE pack; cancelling one member leaves the others to finish; a restarted worker relaunches the
same pack with ``--resume``; an old worker.db gains the pack columns.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from spelltransfer.platform import process
from spelltransfer.platform.protos import sweep_pb2, trainer_pb2, trainer_pb2_grpc
from spelltransfer.platform.security import open_channel
from spelltransfer.platform.worker import PACK_CANCEL_FILE, PACK_STATE_FILE, TrainerWorker
from spelltransfer.run_folder import read_events
from platform_helpers import wait_until as _wait  # noqa: E402




def _starts(output_dir: str) -> list[dict]:
    return [e for e in read_events(Path(output_dir) / "events.jsonl") if e["event"] == "start"]


@pytest.fixture
def packed_trainer(tmp_path):
    from services.trainer.server import serve

    server, port, stop = serve(str(tmp_path / "worker"), port=0, slots=3, pack_size=3, pack_wait_s=5.0)
    channel = open_channel(f"127.0.0.1:{port}")
    yield f"127.0.0.1:{port}", trainer_pb2_grpc.TrainerServiceStub(channel), tmp_path / "worker"
    channel.close()
    stop()


def test_file_names_match_the_pack_job():
    from spelltransfer.train.packed import job

    assert (PACK_CANCEL_FILE, PACK_STATE_FILE) == (job.CANCEL_FILE, job.STATE_FILE)


def test_sweep_trials_share_one_pack(packed_trainer, tmp_path, base_config, make_overrides):
    """The controller fills the worker's 3 slots; the worker trains the 3 trials as one pack."""
    from services.sweep.server import serve
    from spelltransfer.sweep.client import SweepClient

    address, stub, work_dir = packed_trainer
    _, port, stop = serve(str(tmp_path / "controller"), port=0, workers=[address], default_slots=3)
    client = SweepClient(f"127.0.0.1:{port}")
    try:
        spec = {"name": "packed", "base_config": base_config, "evaluate": "auto",
                "overrides": make_overrides(max_steps=4, save_steps=2), "strategy": "random", "seed": 0,
                "objective": "spelling", "max_trials": 3, "max_retries": 0,
                "parameters": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
                               "model.lora.r": {"values": [2, 4]}},
                "results_dir": str(tmp_path / "results"), "mlflow": {"enabled": False}}
        client.submit_text(yaml.safe_dump(spec), "packed.yaml")
        final = _wait(lambda: (s := client.get("packed")).state != sweep_pb2.SWEEP_RUNNING and s, 300,
                      "the sweep to finish", poll_s=0.5)
    finally:
        client.close()
        stop()
    assert final.state == sweep_pb2.SWEEP_COMPLETED, final
    assert all(t.state == "COMPLETE" and t.has_objective for t in final.trials), final.trials
    assert len(final.trials) == 3

    trials = stub.ListTrials(trainer_pb2.ListTrialsRequest(), timeout=10).trials
    assert len(trials) == 3 and all(t.state == trainer_pb2.TRIAL_SUCCEEDED for t in trials)
    # One pack process: every trial launched once, all in the same pack, one pack folder.
    assert all(t.launches == 1 for t in trials)
    pack_ids = {_starts(t.output_dir)[0]["pack_id"] for t in trials}
    assert len(pack_ids) == 1 and [p.name for p in (work_dir / "packs").iterdir()] == list(pack_ids)
    assert all(_starts(t.output_dir)[0]["backend"] == "packed" for t in trials)
    # The pack's own validation evaluation made the separate eval phase unnecessary.
    for trial in trials:
        assert trial.phase == "train" and trial.stop_reason == "max_steps"
        assert all(f"validation.tasks.{task}.accuracy" in trial.metrics for task in ("spelling", "position", "count"))


def test_cancelling_one_member_leaves_the_others(packed_trainer, base_config, make_overrides):
    _, stub, work_dir = packed_trainer
    common = make_overrides(max_steps=300, save_steps=100)
    for trial_id, extra in (("keep-a", []), ("keep-b", ["optimizer.lr=1e-3"]), ("drop", ["training.max_steps=100000"])):
        stub.StartTrial(trainer_pb2.StartTrialRequest(trial_id=trial_id, config_path=base_config,
                                                      overrides=common + extra), timeout=60)
    get = lambda trial_id: stub.GetTrial(trainer_pb2.TrialRef(trial_id=trial_id), timeout=10)  # noqa: E731
    _wait(lambda: get("drop").last_step >= 2, 120, "the pack to train")
    pack_pid = _pack_pid(work_dir)
    assert {get(t).state for t in ("keep-a", "keep-b", "drop")} == {trainer_pb2.TRIAL_RUNNING}

    cancelled = stub.CancelTrial(trainer_pb2.TrialRef(trial_id="drop"), timeout=10)
    assert cancelled.state == trainer_pb2.TRIAL_CANCELLED and cancelled.stop_reason == "cancelled"
    drop_dir = Path(cancelled.output_dir)
    assert (drop_dir / PACK_CANCEL_FILE).exists()
    _wait(lambda: all(get(t).state == trainer_pb2.TRIAL_SUCCEEDED for t in ("keep-a", "keep-b")), 180,
          "the other members to finish")
    _wait(lambda: not process.group_alive(pack_pid), 30, "the pack process to exit")

    done = [e for e in read_events(drop_dir / "events.jsonl") if e["event"] == "done"]
    assert len(done) == 1 and done[0]["reason"] == "cancelled" and done[0]["step"] < 300
    assert not (drop_dir / "metrics.json").exists()
    for trial_id in ("keep-a", "keep-b"):
        trial = get(trial_id)
        assert trial.last_step == 300 and trial.launches == 1
        assert json.loads(trial.metrics_json)["stop"] == {"step": 300, "reason": "max_steps"}
    assert get("drop").state == trainer_pb2.TRIAL_CANCELLED


def _pack_pid(work_dir: Path) -> int:
    packs = list((work_dir / "packs").iterdir())
    assert len(packs) == 1
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and str(packs[0]) in process.cmdline(int(proc.name)):
            return int(proc.name)
    raise AssertionError("no pack process")


def test_restarted_worker_resumes_the_pack(tmp_path, base_config, make_overrides):
    work_dir = tmp_path / "worker"
    overrides = make_overrides(max_steps=150, save_steps=4) + ["training.eval_steps=50"]
    worker = TrainerWorker(work_dir, slots=2, pack_size=2, pack_wait_s=30)
    try:
        for trial_id, lr in (("r-1", "1e-3"), ("r-2", "5e-4")):
            worker.start_trial(trial_id, base_config, overrides + [f"optimizer.lr={lr}"])
        _wait(lambda: worker.get_trial("r-1").last_step >= 8, 120, "a few packed steps")
        pack_id = worker.get_trial("r-1").pack_id
        assert pack_id and worker.get_trial("r-2").pack_id == pack_id
        assert (work_dir / "packs" / pack_id / PACK_STATE_FILE).is_file()
    finally:
        worker.close()  # stops the pack process; the next worker resumes it

    worker = TrainerWorker(work_dir, slots=2, pack_size=2)
    try:
        _wait(lambda: all(worker.get_trial(t).state == "SUCCEEDED" for t in ("r-1", "r-2")), 180, "the resumed pack")
        for trial_id in ("r-1", "r-2"):
            record = worker.get_trial(trial_id)
            assert record.pack_id == pack_id and record.launches == 2 and record.last_step == 150
            starts = _starts(record.output_dir)
            assert len(starts) == 2 and starts[1]["pack_id"] == pack_id and starts[1]["resumed_from"] >= 4
        assert [p.name for p in (work_dir / "packs").iterdir()] == [pack_id]
    finally:
        worker.close()


def test_old_worker_db_gains_pack_columns(tmp_path):
    """A worker.db written before pack mode opens with the new columns (empty for old rows)."""
    work_dir = tmp_path / "worker"
    work_dir.mkdir()
    db = sqlite3.connect(work_dir / "worker.db")
    db.execute("""CREATE TABLE trials (
      trial_id TEXT PRIMARY KEY, state TEXT NOT NULL, config_path TEXT NOT NULL, overrides TEXT NOT NULL,
      labels TEXT NOT NULL, output_dir TEXT NOT NULL, launches INTEGER NOT NULL DEFAULT 0, pgid INTEGER,
      cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', stop_reason TEXT NOT NULL DEFAULT '',
      last_step INTEGER NOT NULL DEFAULT 0, metrics_json TEXT NOT NULL DEFAULT '',
      evaluate TEXT NOT NULL DEFAULT 'auto', phase TEXT NOT NULL DEFAULT 'train',
      created_at REAL NOT NULL, updated_at REAL NOT NULL)""")
    db.execute("INSERT INTO trials (trial_id, state, config_path, overrides, labels, output_dir, created_at, updated_at)"
               " VALUES ('old', 'SUCCEEDED', 'c.yaml', '[]', '{}', 'runs/old', 1.0, 1.0)")
    db.commit()
    db.close()
    worker = TrainerWorker(work_dir)
    try:
        (record,) = worker.list_trials()
        assert record.trial_id == "old" and record.pack_id == "" and record.pack_key == ""
    finally:
        worker.close()


def test_local_sweep_with_pack_size(tmp_path, base_config, make_overrides):
    """`spelltransfer sweep local --slots 2 --pack-size 2`: one worker process, its 2 trials in one pack."""
    from rich.console import Console

    from spelltransfer.sweep.local import run_local_sweep

    spec = {"name": "local-packed", "base_config": base_config, "evaluate": "auto",
            "overrides": make_overrides(max_steps=2, save_steps=2), "strategy": "random", "seed": 1,
            "objective": "spelling", "max_trials": 2, "max_retries": 0,
            "parameters": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
            "results_dir": str(tmp_path / "results"), "mlflow": {"enabled": False},
            "wandb": {"enabled": True, "mode": "offline"}}
    spec_path = tmp_path / "local-packed.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    final = run_local_sweep(spec_path, n_workers=1, slots=2, pack_size=2, work_dir=tmp_path / "platform",
                            console=Console(quiet=True))
    assert [t.state for t in final.trials] == ["COMPLETE", "COMPLETE"], final.trials
    runs = sorted((tmp_path / "platform" / "worker0" / "runs").iterdir())
    starts = [_starts(str(run))[0] for run in runs if run.is_dir()]
    assert len(starts) == 2 and {s["backend"] for s in starts} == {"packed"}
    assert len({s["pack_id"] for s in starts}) == 1

    # trials.csv carries the items behind each accuracy (3 per task), and the sweep reads back.
    from spelltransfer.analyse.sweep import analyse_sweep

    trials_csv = tmp_path / "results" / "metrics" / "local-packed" / "trials.csv"
    rows = list(csv.DictReader(open(trials_csv)))
    assert {(r["spelling_n"], r["position_n"], r["count_n"]) for r in rows} == {("3", "3", "3")}
    analysis = analyse_sweep(trials_csv)
    assert analysis.trials == 2 and analysis.params == ["optimizer.lr"]
    assert all(trial.ci95["spelling"] is not None for trial in analysis.top)

    # W&B: the trials' runs are grouped under the sweep; the sweep's summary run holds the joined
    # table (parameters + validation accuracies) and the analysis figures.
    for run in runs:
        if run.is_dir():
            assert yaml.safe_load((run / "config.yaml").read_text())["training"]["tracking"]["wandb"]["group"] == "local-packed"
    (summary,) = (tmp_path / "results" / "wandb").glob("offline-run-*")
    (table,) = (summary / "files" / "media" / "table").glob("trials_*.table.json")
    logged = json.loads(table.read_text())
    assert "position_accuracy" in logged["columns"] and len(logged["data"]) == 2
    row = dict(zip(logged["columns"], logged["data"][0]))
    assert isinstance(row["optimizer.lr"], float) and isinstance(row["position_accuracy"], float)  # chartable
    assert row["state"] == "COMPLETE" and row["error"] is None
    assert len(list((summary / "files" / "media" / "images").rglob("*.png"))) == 2
