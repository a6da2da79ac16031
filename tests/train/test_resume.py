"""Checkpoints resume exactly, and a corrupt newest checkpoint is skipped with a warning."""

from __future__ import annotations

import json
import logging

import pytest

from spelltransfer.errors import ConfigError
from spelltransfer.train import run_training
from spelltransfer.run_folder import read_events


def step_losses(run_dir):
    """Last logged loss per step (a resumed run logs the steps after its checkpoint again)."""
    return {e["step"]: e["loss"] for e in read_events(run_dir / "events.jsonl") if e["event"] == "step"}


def test_stop_and_resume_matches_straight_run(tiny_config, tmp_path):
    # Dropout on, so restoring the RNG state matters too.
    straight = run_training(tiny_config("training.max_steps=6", "model.lora.dropout=0.1"), tmp_path / "straight")

    half = tiny_config("training.max_steps=6", "model.lora.dropout=0.1")
    # Simulate the interruption: run the first 3 steps as if killed after the step-2 checkpoint.
    # A run with max_steps=3 would change the lr schedule, so instead stop via a raised error.
    class Killed(Exception):
        pass

    def kill_after_step_3(event):
        if event["event"] == "step" and event["step"] == 3:
            raise Killed()

    with pytest.raises(Killed):
        run_training(half, tmp_path / "resumed", on_event=kill_after_step_3)
    assert sorted(p.name for p in (tmp_path / "resumed/checkpoints").iterdir()) == ["step-2"]
    resumed = run_training(half, tmp_path / "resumed", resume=True)

    assert resumed.resumed_from == 2
    assert resumed.stop_step == straight.stop_step == 6
    assert resumed.last_loss == pytest.approx(straight.last_loss, abs=1e-4)
    a, b = step_losses(tmp_path / "straight"), step_losses(tmp_path / "resumed")
    assert a.keys() == b.keys() == set(range(1, 7))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-4), step
    assert resumed.final_metrics["eval_loss"] == pytest.approx(straight.final_metrics["eval_loss"], abs=1e-4)
    events = [e["event"] for e in read_events(tmp_path / "resumed/events.jsonl")]
    assert events.count("start") == 2 and "error" in events and events[-1] == "done"


def test_corrupt_latest_checkpoint_is_skipped(tiny_config, tmp_path, caplog):
    config = tiny_config("training.max_steps=4", "training.keep_last=3", "training.early_stopping.enabled=false")
    run_training(config, tmp_path / "run")
    latest = tmp_path / "run/checkpoints/step-4"
    weights = latest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # a torn write
    with caplog.at_level(logging.WARNING):
        result = run_training(config, tmp_path / "run", resume=True)
    assert "skipping corrupt checkpoint" in caplog.text and "step-4" in caplog.text
    assert result.resumed_from == 2
    assert result.stop_step == 4
    assert (tmp_path / "run/checkpoints/step-4/manifest.json").is_file()  # rewritten intact
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["resumed_from"] == 2 and metrics["stop"] == {"step": 4, "reason": "max_steps"}


def test_existing_run_needs_resume_and_same_config(tiny_config, tmp_path):
    run_training(tiny_config("training.max_steps=2"), tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        run_training(tiny_config("training.max_steps=2"), tmp_path / "run")
    with pytest.raises(ConfigError, match="optimizer.lr"):
        run_training(tiny_config("training.max_steps=2", "optimizer.lr=0.5"), tmp_path / "run", resume=True)
