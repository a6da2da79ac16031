"""A sweep through real processes on 127.0.0.1 survives kill -9 of a worker and of the controller.

One sweep (4 trials, 2 workers, tiny model): a worker is killed mid-trial after a checkpoint and
restarted; later the controller is killed and restarted. The sweep must complete with every
trial accounted for, the interrupted trial must resume from its checkpoint (not restart), and no
trial may run twice.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from spelltransfer.platform import process
from spelltransfer.platform.protos import sweep_pb2, trainer_pb2, trainer_pb2_grpc
from spelltransfer.platform.security import SecuritySettings, open_channel
from spelltransfer.sweep.local import LocalPlatform
from platform_helpers import wait_until as _wait  # noqa: E402


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]




def _training_processes(run_dir: Path) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and str(run_dir) in process.cmdline(int(p.name))]


@pytest.mark.slow
def test_sweep_survives_kill_of_worker_and_controller(tmp_path, base_config, make_overrides, api_token):
    results_dir = tmp_path / "results"
    spec = {
        # The trainer's own generation accuracy (spelling, on its validation sample) is the objective,
        # so each trial is one process; the worker's evaluation phase is tested in test_trainer_service.
        "name": "kill-test", "base_config": base_config, "evaluate": "never",
        "overrides": make_overrides(max_steps=8, save_steps=2) + ["training.early_stopping.metric=accuracy"],
        "strategy": "random", "seed": 0, "objective": "spelling", "max_trials": 4, "max_retries": 1,
        "parameters": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
                       "model.lora.r": {"values": [2, 4]}},
        "results_dir": str(results_dir),
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "experiment": "sweeps-test"},
    }
    with LocalPlatform(tmp_path / "platform", n_workers=2) as platform:
        client = platform.client()
        submitted = client.submit_text(yaml.safe_dump(spec), "kill-test.yaml")
        assert submitted.max_trials == 4

        # 1. kill -9 worker0 once one of its trials has written a checkpoint (and is not done).
        runs0 = platform.work_dir / "worker0" / "runs"

        def checkpointed_run():
            for run in sorted(runs0.glob("*")) if runs0.exists() else []:
                kinds = [e["event"] for e in _events(run)]
                if "checkpoint" in kinds and "done" not in kinds:
                    return run
            return None

        killed_run = _wait(checkpointed_run, 240, "a checkpoint on worker0", poll_s=0.1)
        assert _training_processes(killed_run), "the training process should be running"
        platform.kill("worker0")
        # PR_SET_PDEATHSIG: the training child dies with its worker, so nothing writes the run meanwhile.
        _wait(lambda: not _training_processes(killed_run), 20, "the orphaned training process to die")
        steps_before = max(e["step"] for e in _events(killed_run) if e["event"] == "checkpoint")
        platform.start_worker(0)

        # 2. kill -9 the controller while trials are still to run; restart it on its port.
        _wait(lambda: sum(t.state == "COMPLETE" for t in client.get("kill-test").trials) >= 1, 300,
              "a first completed trial")
        assert client.get("kill-test").state == sweep_pb2.SWEEP_RUNNING
        client.close()
        platform.kill("controller")
        platform.start_controller()
        client = platform.client()

        final = _wait(lambda: (s := client.get("kill-test")).state != sweep_pb2.SWEEP_RUNNING and s, 600,
                      "the sweep to finish")
        client.close()

        # Every trial accounted for, each complete with an objective.
        assert final.state == sweep_pb2.SWEEP_COMPLETED, final
        assert [t.number for t in final.trials] == [0, 1, 2, 3]
        assert all(t.state == "COMPLETE" and t.has_objective for t in final.trials), final.trials

        # The killed trial resumed from its checkpoint in the same run folder (no retry needed).
        starts = [e for e in _events(killed_run) if e["event"] == "start"]
        assert len(starts) == 2 and starts[1]["resumed_from"] == steps_before >= 2
        assert [e["event"] for e in _events(killed_run)][-1] == "done"

        # No trial ran twice: one worker-side trial per sweep trial, one training process each
        # (plus the one resume), across both workers.
        settings = SecuritySettings(token=api_token)
        worker_trials = []
        for index in range(2):
            stub = trainer_pb2_grpc.TrainerServiceStub(open_channel(platform.worker_address(index), settings))
            worker_trials += list(stub.ListTrials(trainer_pb2.ListTrialsRequest(), timeout=10).trials)
        assert sorted(t.labels["number"] for t in worker_trials) == ["0", "1", "2", "3"]
        assert all(t.state == trainer_pb2.TRIAL_SUCCEEDED for t in worker_trials)
        launches = {t.trial_id: t.launches for t in worker_trials}
        assert launches[killed_run.name] == 2
        assert sum(launches.values()) == 5
        for trial in worker_trials:
            starts = [e for e in _events(Path(trial.output_dir)) if e["event"] == "start"]
            assert len(starts) == trial.launches

    # Results: trials.csv (one row per trial, params and accuracies) and MLflow parent + children.
    rows = list(csv.DictReader(open(results_dir / "metrics" / "kill-test" / "trials.csv")))
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    assert all(r["state"] == "COMPLETE" and r["optimizer.lr"] and r["spelling_accuracy"] != "" for r in rows)
    assert {r["stop_reason"] for r in rows} == {"max_steps"}

    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri=spec["mlflow"]["tracking_uri"])
    experiment = mlflow.get_experiment_by_name("sweeps-test")
    runs = mlflow.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == final.mlflow_run_id]
    assert [p.info.run_id for p in parents] == [final.mlflow_run_id]
    assert sorted(c.data.tags["trial.number"] for c in children) == ["0", "1", "2", "3"]
    assert all("objective" in c.data.metrics for c in children)
    # The finished sweep is analysed (results/analysis/NAME) and the report rides on the parent run.
    assert "4 completed trials" in (results_dir / "analysis" / "kill-test" / "sweep_analysis.md").read_text()
    artifacts = {a.path for a in mlflow.list_artifacts(final.mlflow_run_id, "analysis")}
    assert {"analysis/sweep_analysis.md", "analysis/sweep_analysis.json", "analysis/figures"} <= artifacts
