"""The sweep controller over real gRPC: bad specs are INVALID_ARGUMENT naming the field and start
nothing; workers register; a cancelled sweep stops its trials on the worker."""

from __future__ import annotations

import time

import grpc
import pytest
import yaml

from spelltransfer.platform.protos import sweep_pb2, sweep_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from spelltransfer.platform.security import open_channel


@pytest.fixture
def worker(tmp_path):
    from services.trainer.server import serve

    server, port, stop = serve(str(tmp_path / "worker"), port=0)
    channel = open_channel(f"127.0.0.1:{port}")
    yield f"127.0.0.1:{port}", trainer_pb2_grpc.TrainerServiceStub(channel)
    channel.close()
    stop()


@pytest.fixture
def controller(tmp_path, worker):
    from services.sweep.server import serve

    server, port, stop = serve(str(tmp_path / "controller"), port=0, workers=[worker[0]])
    channel = open_channel(f"127.0.0.1:{port}")
    yield sweep_pb2_grpc.SweepServiceStub(channel), tmp_path / "controller"
    channel.close()
    stop()


def _spec(base: str, tmp_path, **changes) -> str:
    spec = {"name": "s1", "base_config": base, "strategy": "random", "max_trials": 2,
            "parameters": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
            "results_dir": str(tmp_path / "results"), "mlflow": {"enabled": False}}
    spec.update(changes)
    return yaml.safe_dump(spec)


@pytest.mark.parametrize("changes, field", [
    ({"max_trials": 0}, "max_trials"),
    ({"strategy": "annealing"}, "strategy"),
    ({"parameters": {"optimizer.lr": {"low": 1e-3, "high": 1e-4}}}, "parameters.optimizer.lr"),
    ({"parameters": {"model.lora.rank": {"values": [4, 8]}}}, "parameters.model.lora.rank"),
    ({"overrides": ["training.max_steps=0"]}, "training.max_steps"),
    ({"overrides": ["training.batch_size=3", "training.grad_accum=2"]}, "grad_accum"),
    ({"base_config": "/nonexistent/config.yaml"}, "base_config"),
    ({"pruner": {"kind": "asha", "min_resource": 0}}, "pruner.min_resource"),
])
def test_invalid_spec_is_invalid_argument_and_starts_nothing(controller, worker, base_config, tmp_path, changes,
                                                             field):
    stub, state_dir = controller
    with pytest.raises(grpc.RpcError) as error:
        stub.SubmitSweep(sweep_pb2.SubmitSweepRequest(spec_yaml=_spec(base_config, tmp_path, **changes),
                                                      source="bad.yaml"), timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.value.details(), error.value.details()
    assert not stub.ListSweeps(sweep_pb2.ListSweepsRequest(), timeout=10).sweeps
    assert not (state_dir / "optuna.db").exists()
    assert not worker[1].ListTrials(trainer_pb2.ListTrialsRequest(), timeout=10).trials


def test_unknown_names_and_bad_registrations(controller):
    stub, _ = controller
    for call in (stub.GetSweep, stub.CancelSweep):
        with pytest.raises(grpc.RpcError) as error:
            call(sweep_pb2.SweepRef(name="nope"), timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as error:
        stub.RegisterWorker(sweep_pb2.RegisterWorkerRequest(address="no-port", slots=1), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "address" in error.value.details()
    registered = stub.RegisterWorker(sweep_pb2.RegisterWorkerRequest(address="127.0.0.1:1", slots=3), timeout=10)
    assert registered.slots == 3 and registered.busy == 0
    assert "127.0.0.1:1" in {w.address for w in stub.ListWorkers(sweep_pb2.ListWorkersRequest(), timeout=10).workers}


@pytest.mark.slow
def test_cancel_stops_running_trials_and_resubmit_is_idempotent(controller, worker, base_config, tmp_path,
                                                                make_overrides):
    stub, _ = controller
    text = _spec(base_config, tmp_path, overrides=make_overrides(max_steps=10_000, save_steps=1000))
    sweep = stub.SubmitSweep(sweep_pb2.SubmitSweepRequest(spec_yaml=text), timeout=60)
    assert sweep.state == sweep_pb2.SWEEP_RUNNING and sweep.max_trials == 2
    assert stub.SubmitSweep(sweep_pb2.SubmitSweepRequest(spec_yaml=text), timeout=60).name == "s1"  # same spec
    with pytest.raises(grpc.RpcError) as clash:
        stub.SubmitSweep(sweep_pb2.SubmitSweepRequest(spec_yaml=text.replace("max_trials: 2", "max_trials: 3")),
                         timeout=60)
    assert clash.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "name" in clash.value.details()

    deadline = time.monotonic() + 60
    while not (trials := worker[1].ListTrials(trainer_pb2.ListTrialsRequest(active_only=True), timeout=10).trials):
        assert time.monotonic() < deadline, "no trial reached the worker"
        time.sleep(0.2)
    assert len(trials) == 1  # one worker with one slot: one trial at a time
    cancelled = stub.CancelSweep(sweep_pb2.SweepRef(name="s1"), timeout=60)
    assert cancelled.state == sweep_pb2.SWEEP_CANCELLED
    deadline = time.monotonic() + 60
    while (trial := worker[1].GetTrial(trainer_pb2.TrialRef(trial_id=trials[0].trial_id), timeout=10)).state \
            != trainer_pb2.TRIAL_CANCELLED:
        assert time.monotonic() < deadline, f"trial not cancelled on the worker: {trial}"
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while True:
        final = stub.GetSweep(sweep_pb2.SweepRef(name="s1"), timeout=10)
        if not any(t.state == "RUNNING" for t in final.trials):
            break
        assert time.monotonic() < deadline, f"trials still running: {final.trials}"
        time.sleep(0.2)
    assert [t.state for t in final.trials] == ["FAIL"]
    assert final.trials[0].stop_reason == "cancelled"
    assert len(worker[1].ListTrials(trainer_pb2.ListTrialsRequest(), timeout=10).trials) == 1  # nothing else started
