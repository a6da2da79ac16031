"""Early stopping inside a real (tiny) run: fires at the expected step, restores the best adapter, plots."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from spelltransfer.train import run_training
from spelltransfer.run_folder import read_events


def test_eval_loss_early_stop_restores_best(tiny_config, tmp_path):
    # lr so small that eval loss moves far less than min_delta: evals 2 and 3 count as no
    # improvement over step 1, patience 2 runs out at step 3 of 8.
    config = tiny_config("training.max_steps=8", "training.eval_steps=1", "training.save_steps=100",
                         "optimizer.lr=1e-7", "training.early_stopping.patience=2", "training.early_stopping.min_delta=0.01")
    result = run_training(config, tmp_path / "run")
    assert (result.stop_reason, result.stop_step, result.best_step) == ("early_stopping", 3, 1)
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == ["step-1", "step-3"]
    final = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    best = load_file(str(tmp_path / "run/checkpoints/step-1/adapter_model.safetensors"))
    last = load_file(str(tmp_path / "run/checkpoints/step-3/adapter_model.safetensors"))
    assert all((final[k] == best[k]).all() for k in best)
    assert any((final[k] != last[k]).any() for k in last)
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["stop"] == {"step": 3, "reason": "early_stopping"}
    assert metrics["best"]["step"] == 1 and metrics["adapter"]["from_step"] == 1
    assert result.plot_path.is_file() and result.plot_path.stat().st_size > 5000
    done = read_events(tmp_path / "run/events.jsonl")[-1]
    assert done["event"] == "done" and done["reason"] == "early_stopping" and done["step"] == 3


def test_accuracy_metric_uses_generation(tiny_config, tmp_path):
    # A random tiny model answers nothing right: accuracy stays 0, patience 1 stops at step 2.
    config = tiny_config("training.max_steps=5", "training.eval_steps=1", "training.early_stopping.metric=accuracy",
                         "training.early_stopping.patience=1", "training.eval_samples=3")
    result = run_training(config, tmp_path / "run")
    assert (result.stop_reason, result.stop_step, result.best_step) == ("early_stopping", 2, 1)
    assert result.final_metrics["accuracy"] == 0.0
    assert "accuracy_spelling" in result.final_metrics and "eval_loss" in result.final_metrics
