"""SIGTERM to the platform services (issue 17, "clean shutdown for every long-running command").

A trainer worker with a trial in flight and the sweep controller, as real ``spelltransfer platform``
processes on 127.0.0.1 (``LocalPlatform``): SIGTERM to each exits 0 with no traceback, and the
worker's training child (its own process group) is gone with it, not left running. The trial is
resumable from its checkpoint (the kill -9 case is tests/platform/test_sweep_reliability.py).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from platform_helpers import wait_until
from spelltransfer.platform import process
from spelltransfer.sweep.local import LocalPlatform


def _training_pids(runs: Path) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and str(runs) in process.cmdline(int(p.name))]


def _checkpointed(runs: Path) -> Path | None:
    for run in sorted(runs.glob("*")) if runs.exists() else []:
        events = run / "events.jsonl"
        kinds = [json.loads(line)["event"] for line in events.read_text().splitlines() if line.strip()] \
            if events.exists() else []
        if "checkpoint" in kinds and "done" not in kinds:
            return run
    return None


@pytest.mark.slow
def test_sigterm_stops_worker_and_controller_cleanly(tmp_path, base_config, make_overrides):
    spec = {"name": "sigterm-test", "base_config": base_config, "evaluate": "never",
            # Long enough that the trial is still training when the signal comes.
            "overrides": make_overrides(max_steps=400, save_steps=2) + ["training.early_stopping.enabled=false"],
            "strategy": "random", "seed": 0, "objective": "spelling", "max_trials": 1,
            "parameters": {"model.lora.r": {"values": [2]}},
            "results_dir": str(tmp_path / "results")}
    with LocalPlatform(tmp_path / "platform", n_workers=1) as platform:
        client = platform.client()
        client.submit_text(yaml.safe_dump(spec), "sigterm-test.yaml")
        client.close()
        runs = platform.work_dir / "worker0" / "runs"
        run = wait_until(lambda: _checkpointed(runs), 180, "a checkpoint of the running trial", poll_s=0.1)
        assert _training_pids(run), "the training process should be running"

        for name in ("worker0", "controller"):
            child = platform.procs[name]
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=60) == 0, f"{name} exited {child.returncode} on SIGTERM"
            log = (platform.work_dir / "logs" / f"{name}.log").read_text()
            assert "Traceback" not in log, log[-3000:]
            if name == "worker0":
                # Stopped with its worker (not orphaned), and the run keeps what it had: a checkpoint
                # to resume from, no "done" written.
                wait_until(lambda: not _training_pids(run), 10, "the training child to stop")
                assert _checkpointed(runs) == run
