"""A sweep advanced in chunks across "machines": chunk 1 stops while trials are in flight, chunk 2
continues from a copy of the state folder at another path with a fresh work folder.

The trials cut at chunk 1's end are FAIL (``chunk_cut``) and re-enqueued with the same params;
chunk 2 runs them and new ones, the COMPLETE count grows to the target, and no trial runs twice.
Real processes (controller, one trainer worker with two slots), the tiny 2-layer model.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from spelltransfer.sweep.chunk import run_chunk
from spelltransfer.sweep.design import balanced_design


def _rows(state: Path) -> list[dict]:
    with (state / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def _params(row: dict) -> tuple:
    return row["optimizer.lr"], row["model.lora.r"]


@pytest.mark.slow
def test_chunks_continue_on_another_machine(tmp_path, base_config, make_overrides, api_token):
    spec = {
        "name": "chunk-test", "base_config": base_config, "evaluate": "never",
        "overrides": make_overrides(max_steps=4, save_steps=2) + ["training.early_stopping.metric=accuracy"],
        "strategy": "random", "seed": 0, "objective": "spelling", "max_trials": 2, "max_retries": 0,
        "parameters": {"optimizer.lr": {"values": [1.0e-3, 2.0e-3]}, "model.lora.r": {"values": [2, 4]}},
        "design": {"kind": "balanced", "trials": 2},
        "mlflow": {"enabled": False},
    }
    spec_path = tmp_path / "chunk-test.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    machine1, machine2 = tmp_path / "machine1", tmp_path / "machine2"

    # Chunk 1 (one slot): ends once trial 0 is COMPLETE and trial 1 has started.
    first = run_chunk(spec_path, machine1 / "state", 120, work_dir=machine1 / "work", margin_s=5, poll_s=0.3,
                      stop_when=lambda counts: counts["complete"] >= 1 and counts["running"] >= 1)
    assert first.complete_after == 1 and not first.done and first.finished == [0]
    assert first.cut == [1], "the trial in flight at the end is cut"
    rows1 = _rows(machine1 / "state")
    by_number1 = {int(r["number"]): r for r in rows1}
    for number in first.cut:
        assert by_number1[number]["state"] == "FAIL" and by_number1[number]["stop_reason"] == "chunk_cut"
        requeued = [r for r in rows1 if r["requeued_from"] == str(number)]
        assert len(requeued) == 1 and requeued[0]["state"] == "WAITING"
        assert _params(requeued[0]) == _params(by_number1[number])
    assert (machine1 / "state" / "optuna.db").exists()
    for row in rows1:
        if row["state"] == "COMPLETE":
            assert row["spelling_accuracy"] != "" and int(row["steps"]) == 4 and int(row["tokens"]) > 0
            assert (machine1 / "state" / row["curve"]).exists()

    # Chunk 2 on "another machine": the state folder copied elsewhere, nothing else of machine 1.
    shutil.copytree(machine1 / "state", machine2 / "state")
    shutil.rmtree(machine1)
    second = run_chunk(spec_path, machine2 / "state", 120, work_dir=machine2 / "work", margin_s=5, poll_s=0.3)
    assert not second.warm and second.serial == 2 and second.finished == [2] and not second.cut
    assert second.done and second.complete_after == 2 > first.complete_after

    rows = _rows(machine2 / "state")
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert [r["number"] for r in complete] == ["0", "2"]
    # Every cut trial ran again exactly once under a new number, with its params.
    for number in first.cut:
        reruns = [r for r in rows if r["requeued_from"] == str(number)]
        assert len(reruns) == 1 and reruns[0]["state"] == "COMPLETE"
    # No trial ran twice: one worker run per trial, and each design point completed at most once.
    run_ids = [r["worker_trial_id"] for r in rows if r["worker_trial_id"]]
    assert len(run_ids) == len(set(run_ids))
    design = [r["design_index"] for r in complete if r["design_index"] != ""]
    assert len(design) == len(set(design)) == 2
    # Chunk 1's finished trials are kept as they were.
    for number, row in by_number1.items():
        if row["state"] == "COMPLETE":
            assert next(r for r in rows if int(r["number"]) == number)["objective"] == row["objective"]
    log = [json.loads(line) for line in (machine2 / "state" / "chunks.jsonl").read_text().splitlines()]
    assert [entry["serial"] for entry in log] == [1, 2]


def test_balanced_design_covers_every_value_equally():
    levels = {name: [1, 2, 3, 4] for name in ("r", "alpha", "lr", "batch", "accum", "steps")}
    points = balanced_design(levels, 32, seed=0)
    assert len(points) == 32 and points == balanced_design(levels, 32, seed=0)
    for name in levels:
        assert sorted(p[name] for p in points) == sorted([1, 2, 3, 4] * 8)


def test_micro_batch_and_step_cap_become_the_trial_overrides(repo_root, monkeypatch):
    from spelltransfer.sweep.spec import check_training_config, load_spec, trial_overrides

    monkeypatch.chdir(repo_root)
    spec = load_spec("configs/sweeps/study.yaml")
    params = {"training.micro_batch_size": 16, "training.grad_accum": 4, "training.max_steps": 5000}
    assert trial_overrides(spec, params)[-3:] == ["training.grad_accum=4", "training.max_steps=5000",
                                                  "training.batch_size=64"]
    capped = spec.model_copy(update={"max_micro_steps": 8000})
    assert "training.max_steps=2000" in trial_overrides(capped, params)  # 8000 micro-batches / 4
    assert "training.max_steps=500" in trial_overrides(capped, dict(params, **{"training.max_steps": 500}))
    check_training_config(spec, params)  # batch 64 in 4 micro-batches of 16 validates


def _state_with_serial(folder: Path, serial: int) -> Path:
    """A state folder whose optuna.db carries chunk_serial (what gpu.sh reads with sqlite3 alone)."""
    import optuna

    folder.mkdir(parents=True)
    study = optuna.create_study(study_name="study", storage=f"sqlite:///{folder / 'optuna.db'}")
    study.set_user_attr("chunk_serial", serial)
    (folder / "chunks.jsonl").write_text("")
    return folder


def test_gpu_sh_keep_commits_only_a_newer_state(tmp_path, repo_root):
    """results/study/gpu.sh keep DIR: DIR/state.tar.gz replaces results/study/state only when its
    chunk serial is not older, and is committed by path (the GPU sequence's step after each call)."""
    import subprocess
    import sys
    import tarfile

    repo = tmp_path / "repo"
    (repo / "results" / "study").mkdir(parents=True)
    shutil.copy(Path(repo_root) / "results" / "study" / "gpu.sh", repo / "results" / "study" / "gpu.sh")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)

    def files_at(serial: int) -> Path:
        out = tmp_path / f"out{serial}"
        state = _state_with_serial(tmp_path / f"s{serial}" / "state", serial)
        out.mkdir()
        with tarfile.open(out / "state.tar.gz", "w:gz") as tar:
            tar.add(state, arcname="state")
        return out

    def keep(out: Path) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "PY": sys.executable}
        return subprocess.run(["bash", "results/study/gpu.sh", "keep", str(out)], cwd=repo, env=env,
                              capture_output=True, text=True, check=False)

    two, one = files_at(2), files_at(1)
    assert keep(two).returncode == 0
    log = subprocess.run([*git, "log", "--oneline", "-1"], capture_output=True, text=True, check=True).stdout
    assert "state after chunk 2" in log
    older = keep(one)
    assert older.returncode == 1 and "older" in older.stdout
    assert "state after chunk 2" in subprocess.run([*git, "log", "--oneline", "-1"], capture_output=True, text=True,
                                                   check=True).stdout
