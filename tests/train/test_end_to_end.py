"""train -> adapter -> `spelltransfer eval --adapter` on the real bundled model, via the CLIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_train_cli_then_eval_cli_on_bundled_model(tiny_data_dir, tmp_path, repo_root):
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    run_dir = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "spelltransfer.cli", "train", "--config", str(repo_root / "configs/training/config.yaml"),
         "--set", f"training.data_dir={tiny_data_dir}", "--set", "training.max_steps=3", "--set", "training.batch_size=4",
         "--set", "training.eval_steps=3", "--set", "training.eval_samples=4", "--set", "training.num_threads=1",
         "--set", "training.tracking.mlflow.enabled=false", "--set", "training.tracking.wandb.enabled=false",
         "--set", f"training.plot_dir={tmp_path / 'plots'}", "--output-dir", str(run_dir), "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    adapter = run_dir / "final"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stop"]["step"] == 3 and metrics["final"]["eval_loss"] > 0

    out = tmp_path / "eval.json"
    evaluation = subprocess.run(
        [sys.executable, "-m", "spelltransfer.cli", "eval", "--model", "smollm2-135m", "--adapter", str(adapter),
         "--data", str(tiny_data_dir), "--split", "test", "--limit", "3", "--threads", "1", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tasks"]["spelling"]["n"] == 3
    assert str(adapter) in (result.get("adapter") or "")
