"""Early stopping fires at the evaluation where patience runs out, not before."""

from __future__ import annotations

import pytest

from spelltransfer.train.early_stopping import EarlyStopping


def run(values, **kwargs):
    stopper = EarlyStopping(**kwargs)
    for step, value in values:
        stopper.update(step, value)
        if stopper.should_stop:
            break
    return stopper


def test_min_mode_stops_after_patience_bad_evals():
    stopper = run([(10, 1.0), (20, 0.8), (30, 0.81), (40, 0.79), (50, 0.85), (60, 0.9), (70, 0.5)], patience=2, min_delta=0.05)
    # 0.79 is not 0.05 better than 0.8: evals at 30 and 40 are both "no improvement".
    assert stopper.stopped_step == 40
    assert stopper.best_step == 20 and stopper.best_value == 0.8


def test_max_mode_for_accuracy_and_reset_on_improvement():
    stopper = run([(1, 0.1), (2, 0.1), (3, 0.3), (4, 0.3), (5, 0.29), (6, 0.31), (7, 0.2)], patience=3, mode="max")
    assert stopper.best_step == 6
    assert not stopper.should_stop
    stopper.update(8, 0.2)  # second eval without improvement since step 6
    assert stopper.stopped_step is None
    stopper.update(9, 0.2)  # third: patience 3 is used up
    assert stopper.stopped_step == 9


def test_state_round_trip_and_bad_arguments():
    stopper = run([(1, 3.0), (2, 3.5)], patience=3)
    clone = EarlyStopping(patience=3)
    clone.load_state_dict(stopper.state_dict())
    clone.update(3, 3.6)
    clone.update(4, 3.7)
    assert clone.stopped_step == 4
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError):
        EarlyStopping(patience=1, mode="up")
