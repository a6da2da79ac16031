"""The sweep's MLflow child runs survive a controller killed mid-logging: a finished trial whose
child run is missing, or was created and never ended, gets one complete child run — never two."""

from spelltransfer.sweep.controller import TrialView
from spelltransfer.sweep.results import SweepTracker


def _trial(number: int, state: str = "COMPLETE", objective: float | None = 0.5) -> TrialView:
    return TrialView(number=number, state=state, params={"optimizer.lr": "0.001"}, attempts=1, worker="w0",
                     worker_trial_id=f"t{number}", objective=objective, metrics={"spelling_accuracy": 0.5},
                     steps=8, stop_reason="max_steps", error="", duration_s=1.0)


def _children(tracker: SweepTracker, parent: str):
    return tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")


def test_sync_completes_cut_off_and_missing_child_runs_once(tmp_path):
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "sweeps")
    parent = tracker.start_sweep("s", "name: s\n", {})
    trials = [_trial(0), _trial(1), _trial(2, state="FAIL", objective=None), _trial(3, state="RUNNING", objective=None)]
    tracker.log_trial(parent, "s", trials[0])  # logged whole
    # Trial 1: the controller died after create_run, before its metrics and its end were logged.
    tracker.client.create_run(tracker.experiment_id, run_name="s-trial-1",
                              tags={"mlflow.parentRunId": parent, "trial.number": "1"})
    # Trial 2: died before logging anything. Trial 3 is still running: nothing to log yet.
    assert {n: done for n, (_, done) in tracker.logged_trials(parent).items()} == {0: True, 1: False}

    assert tracker.sync_trials(parent, "s", trials) == [1, 2]
    children = _children(tracker, parent)
    assert sorted(int(r.data.tags["trial.number"]) for r in children) == [0, 1, 2]
    by_number = {int(r.data.tags["trial.number"]): r for r in children}
    for number in (0, 1):
        assert by_number[number].info.status == "FINISHED"
        assert by_number[number].data.metrics["objective"] == 0.5
        assert by_number[number].data.params == {"optimizer.lr": "0.001"}
    assert by_number[2].info.status == "FAILED" and "objective" not in by_number[2].data.metrics

    assert tracker.sync_trials(parent, "s", trials) == []  # idempotent: a second restart adds nothing
    assert len(_children(tracker, parent)) == 3


def test_parent_run_is_found_again_by_its_key_not_opened_twice(tmp_path):
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "sweeps")
    first = tracker.start_sweep("s", "name: s\n", {"objective": "spelling"}, key="s@1.5")
    # The controller died before recording ``first``; on restart it asks again with the same key.
    assert tracker.start_sweep("s", "name: s\n", {"objective": "spelling"}, key="s@1.5") == first
    # The same name submitted again later (another key) is another sweep: a new parent.
    assert tracker.start_sweep("s", "name: s\n", {"objective": "spelling"}, key="s@9.0") != first
