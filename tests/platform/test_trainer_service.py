"""The trainer worker over real gRPC: start, stream, get, list, cancel; bad configs start nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from spelltransfer.platform import process
from spelltransfer.platform.protos import trainer_pb2, trainer_pb2_grpc
from spelltransfer.platform.security import open_channel


@pytest.fixture
def trainer(tmp_path):
    from services.trainer.server import serve

    server, port, stop = serve(str(tmp_path / "worker"), port=0, slots=1)
    channel = open_channel(f"127.0.0.1:{port}")
    yield trainer_pb2_grpc.TrainerServiceStub(channel), tmp_path / "worker"
    channel.close()
    stop()


@pytest.mark.slow
def test_trial_runs_streams_progress_and_is_idempotent(trainer, base_config, make_overrides):
    stub, work_dir = trainer
    overrides = make_overrides(max_steps=4, save_steps=2)
    request = trainer_pb2.StartTrialRequest(trial_id="t-1", config_path=base_config, overrides=overrides,
                                            labels={"sweep": "s"}, evaluate="always")
    first = stub.StartTrial(request, timeout=30)
    assert first.state in (trainer_pb2.TRIAL_PENDING, trainer_pb2.TRIAL_RUNNING)
    again = stub.StartTrial(request, timeout=30)  # same id: the same trial, not a second run
    assert again.trial_id == "t-1" and again.created_at == first.created_at

    # A second trial does not fit the single slot.
    with pytest.raises(grpc.RpcError) as busy:
        stub.StartTrial(trainer_pb2.StartTrialRequest(trial_id="t-2", config_path=base_config, overrides=overrides),
                        timeout=30)
    assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    events = list(stub.WatchTrial(trainer_pb2.WatchTrialRequest(trial_id="t-1"), timeout=300))
    kinds = [e.event for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["done", "state"]
    assert [e.step for e in events if e.event == "checkpoint"] == [2, 4]
    assert all(e.loss > 0 for e in events if e.event == "step")
    assert all("eval_loss" in e.metrics for e in events if e.event == "eval")
    assert events[-1].state == trainer_pb2.TRIAL_SUCCEEDED
    assert [e.line for e in events[:-1]] == list(range(1, len(events)))

    # Continuing a watch from a line skips what was seen.
    tail = list(stub.WatchTrial(trainer_pb2.WatchTrialRequest(trial_id="t-1", from_line=len(events) - 2), timeout=30))
    assert [e.event for e in tail] == ["done", "state"]

    trial = stub.GetTrial(trainer_pb2.TrialRef(trial_id="t-1"), timeout=10)
    assert trial.state == trainer_pb2.TRIAL_SUCCEEDED and trial.launches == 1 and trial.last_step == 4
    assert trial.stop_reason == "max_steps" and "final.eval_loss" in trial.metrics
    assert json.loads(trial.metrics_json)["stop"]["step"] == 4
    # After training, the evaluation phase scored the adapter on validation for all three tasks.
    assert trial.phase == "eval"
    for task in ("spelling", "position", "count"):
        assert f"validation.tasks.{task}.n" in trial.metrics and f"validation.tasks.{task}.accuracy" in trial.metrics
    assert (Path(trial.output_dir) / "validation_eval.json").is_file()
    assert (Path(trial.output_dir) / "final" / "adapter_config.json").is_file()
    assert [t.trial_id for t in stub.ListTrials(trainer_pb2.ListTrialsRequest(), timeout=10).trials] == ["t-1"]
    assert not stub.ListTrials(trainer_pb2.ListTrialsRequest(active_only=True), timeout=10).trials


@pytest.mark.slow
def test_cancel_stops_the_training_process_group(trainer, base_config, make_overrides):
    stub, _ = trainer
    overrides = make_overrides(max_steps=10_000, save_steps=1000)
    stub.StartTrial(trainer_pb2.StartTrialRequest(trial_id="long", config_path=base_config, overrides=overrides),
                    timeout=30)
    deadline = time.monotonic() + 30
    while (trial := stub.GetTrial(trainer_pb2.TrialRef(trial_id="long"), timeout=10)).state != trainer_pb2.TRIAL_RUNNING:
        assert time.monotonic() < deadline, "the trial never started"
        time.sleep(0.1)
    pid = _training_pid(trial.output_dir)
    assert process.group_alive(pid)
    stub.CancelTrial(trainer_pb2.TrialRef(trial_id="long"), timeout=10)
    deadline = time.monotonic() + 30
    while (trial := stub.GetTrial(trainer_pb2.TrialRef(trial_id="long"), timeout=10)).state != trainer_pb2.TRIAL_CANCELLED:
        assert time.monotonic() < deadline, f"not cancelled: {trial}"
        time.sleep(0.1)
    assert not process.group_alive(pid)
    assert trial.stop_reason == "cancelled"


def _training_pid(output_dir: str) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and output_dir in process.cmdline(int(proc.name)) and \
                "spelltransfer.train" in process.cmdline(int(proc.name)):
            return int(proc.name)
    raise AssertionError(f"no training process for {output_dir}")


@pytest.mark.parametrize("overrides, field", [
    (["training.max_steps=0"], "training.max_steps"),
    (["model.lora.rank=4"], "rank"),
    (["optimizer.lr=fast"], "optimizer.lr"),
])
def test_invalid_config_is_rejected_and_nothing_starts(trainer, base_config, overrides, field):
    stub, work_dir = trainer
    with pytest.raises(grpc.RpcError) as error:
        stub.StartTrial(trainer_pb2.StartTrialRequest(trial_id="bad", config_path=base_config, overrides=overrides),
                        timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.value.details()
    assert not stub.ListTrials(trainer_pb2.ListTrialsRequest(), timeout=10).trials
    assert not (work_dir / "runs").exists()


def test_bad_requests_name_the_field(trainer, base_config):
    stub, _ = trainer
    cases = [(trainer_pb2.StartTrialRequest(trial_id="../x", config_path=base_config), "trial_id"),
             (trainer_pb2.StartTrialRequest(trial_id="x", config_path=""), "config_path"),
             (trainer_pb2.StartTrialRequest(trial_id="x", config_path="missing.yaml"), "missing.yaml"),
             (trainer_pb2.StartTrialRequest(trial_id="x", config_path=base_config, evaluate="sometimes"), "evaluate")]
    for request, field in cases:
        with pytest.raises(grpc.RpcError) as error:
            stub.StartTrial(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in error.value.details()
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetTrial(trainer_pb2.TrialRef(trial_id="nope"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
