"""`spelltransfer demo` — the README's main job — end to end as a subprocess, on the tiny model:
data -> baseline -> train -> tuned eval -> transfer table -> a sweep through the local gRPC
services -> its analysis with the untrained model scored on the trials' validation items."""

import json
import os
import subprocess
import sys

import pytest
import yaml


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path, tiny_model_path, repo_root):
    spec = yaml.safe_load((repo_root / "configs" / "sweeps" / "demo.yaml").read_text())
    spec["base_config"] = str(repo_root / "configs" / "training" / "config.yaml")
    spec["results_dir"] = str(tmp_path / "results")
    spec["overrides"] += ["training.max_steps=2", "training.precision=fp32"]
    spec_path = tmp_path / "demo-sweep.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", WANDB_MODE="offline",
               WANDB_DIR=str(tmp_path))
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "spelltransfer.cli", "demo", "--out", str(out), "--model", tiny_model_path,
               "--config", str(repo_root / "configs" / "training" / "config.yaml"), "--steps", "2",
               "--train-batch-size", "2", "--eval-items", "3", "--sweep-spec", str(spec_path), "--workers", "1"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["timings_s"]) == {"data", "baseline eval", "training", "tuned eval", "sweep", "sweep analysis",
                                         "total"}
    assert set(summary["transfer"]["tasks"]) == {"spelling", "position", "count"}
    assert all(row["n"] == 3 for row in summary["transfer"]["tasks"].values())
    base_validation = json.loads((out / "eval_base_validation.json").read_text())
    assert {task: m["n"] for task, m in base_validation["tasks"].items()} == {"spelling": 4, "position": 4, "count": 4}
    report = (out / "sweep_analysis" / "sweep_analysis.md").read_text()
    assert "4 completed trials" in report and "Untrained baseline on the validation items" in report
    assert (out / "sweep_analysis" / "figures" / "transfer_vs_spelling.png").stat().st_size > 1000
