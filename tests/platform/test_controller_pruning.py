"""Pruning decisions of the controller on a real Optuna study: an eval event worse than its rung
marks the attempt pruned (the worker is asked to cancel it), and the cancelled trial is PRUNED."""

from __future__ import annotations

import csv

import yaml

from spelltransfer.platform.protos import trainer_pb2
from spelltransfer.sweep.controller import SweepController
from spelltransfer.sweep.study import suggest


def test_asha_prunes_a_trial_worse_than_its_rung(tmp_path, base_config):
    controller = SweepController(tmp_path / "controller")  # no workers: the scheduler places nothing
    try:
        spec_yaml = yaml.safe_dump({
            "name": "p", "base_config": base_config, "strategy": "random", "max_trials": 5,
            "parameters": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-3}},
            "pruner": {"kind": "asha", "metric": "eval_loss", "min_resource": 2, "reduction_factor": 2},
            "results_dir": str(tmp_path / "results"), "mlflow": {"enabled": False}})
        controller.submit(spec_yaml)
        sweep = controller.sweeps.open("p")
        for loss in (1.0, 1.2):  # two earlier trials that reached step 2 with low loss
            trial = sweep.study.ask()
            suggest(trial, sweep.spec)
            trial.report(-loss, 2)
            sweep.study.tell(trial, 0.5)

        def running_attempt():
            trial = sweep.study.ask()
            suggest(trial, sweep.spec)
            row = controller.store.add_dispatch("p", trial.number, 1, sweep.trials.trial_id(trial.number), [])
            return controller.store.update_dispatch(row, state="RUNNING", worker="127.0.0.1:9")

        good = running_attempt()
        kept = controller.follower.report(good, sweep, trainer_pb2.TrialEvent(event="eval", step=2,
                                                                              metrics={"eval_loss": 0.9}))
        assert not kept.pruned

        bad = running_attempt()
        pruned = controller.follower.report(bad, sweep, trainer_pb2.TrialEvent(event="eval", step=2,
                                                                               metrics={"eval_loss": 5.0}))
        assert pruned.pruned and controller.store.dispatch("p", bad.number, 1).pruned

        # The worker reports the trial cancelled: Optuna records PRUNED, trials.csv says so.
        cancelled = trainer_pb2.Trial(state=trainer_pb2.TRIAL_CANCELLED, last_step=2)
        controller.follower.on_worker_finished(pruned, sweep, cancelled)
        view = controller.get("p")
        states = {t.number: t.state for t in view.trials}
        assert states[bad.number] == "PRUNED" and states[good.number] == "RUNNING"
        rows = {int(r["number"]): r for r in csv.DictReader(open(view.trials_csv))}
        assert rows[bad.number]["state"] == "PRUNED" and rows[bad.number]["stop_reason"] == "pruned"
    finally:
        controller.close()
