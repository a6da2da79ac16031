"""The worker's evaluation phase keeps the run's CPU thread budget (``training.num_threads``):
two workers sharing two cores each train with one thread, and an evaluation at torch's default
(every core) beside them oversubscribes the machine. Measured on 2 cores, two workers, the
bundled model, 150 validation items: 519 s and 533 s at torch's default, 79–89 s with one thread."""

import subprocess
import sys

import yaml

from spelltransfer.platform.eval_job import _from_run_dir


def _run_dir(tmp_path, num_threads):
    config = {"model": {"name": "m"}, "training": {"data_dir": "d", "eval_batch_size": 8, "num_threads": num_threads},
              "transfer": {"eval_items_per_task": 3}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_eval_job_takes_the_runs_thread_budget(tmp_path):
    job = _from_run_dir(_run_dir(tmp_path, 1))
    assert job["num_threads"] == 1 and job["limit"] == 3 and job["batch_size"] == 8
    assert _from_run_dir(_run_dir(tmp_path, None))["num_threads"] is None


def test_bad_thread_count_is_named(tmp_path):
    done = subprocess.run([sys.executable, "-m", "spelltransfer.platform.eval_job", "--run-dir",
                           str(_run_dir(tmp_path, 0)), "--out", str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "num_threads must be >= 1, got 0" in done.stderr
    assert not (tmp_path / "out.json").exists()
