"""The evaluator service's engine: one evaluation subprocess (``platform.eval_job``) per request.

A subprocess (not in-process) so a model load cannot leak memory into the long-lived service, a
cancelled RPC can stop it as a process group, and the result is what ``spelltransfer eval`` writes (same engine):
``{"tasks": {task: {"accuracy", "ci95": [lo, hi], "n"}}}``. Progress is the number of lines in
``FILE.predictions.jsonl`` (written at the end); until then updates carry the elapsed time.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from spelltransfer.errors import ConfigError
from spelltransfer.platform import limits, process
from spelltransfer.platform.errors import UnavailableError
from spelltransfer.platform.roots import ServiceRoots

# The only ``extra_args`` a request may pass to the evaluation job, each with the pattern its value
# must match: the service picks the output file (--out) and the inputs come from the request's own
# checked fields, so no flag may name a path.
EXTRA_FLAGS: dict[str, re.Pattern] = {
    "--tasks": re.compile(r"^[A-Za-z0-9_-]{1,64}(,[A-Za-z0-9_-]{1,64}){0,15}$"),
    "--batch-size": re.compile(r"^[1-9][0-9]{0,3}$"),
    "--threads": re.compile(r"^[1-9][0-9]{0,2}$"),
}


def check_extra_args(extra_args: list[str]) -> list[str]:
    """``--flag=value`` or ``--flag value`` pairs of ``EXTRA_FLAGS`` only; returns them as ``--flag=value``."""
    args = list(extra_args)
    if len(args) > limits.MAX_EXTRA_ARGS:
        raise ConfigError(f"extra_args: {len(args)} arguments, over the limit of {limits.MAX_EXTRA_ARGS}")
    allowed = ", ".join(EXTRA_FLAGS)
    checked, index = [], 0
    while index < len(args):
        limits.check_text(f"extra_args[{index}]", args[index], limits.MAX_EXTRA_ARG_BYTES)
        flag, sep, value = args[index].partition("=")
        if flag not in EXTRA_FLAGS:
            raise ConfigError(f"extra_args[{index}]: {flag[:40]!r} is not allowed (allowed: {allowed})")
        if not sep:
            if index + 1 >= len(args):
                raise ConfigError(f"extra_args[{index}]: {flag} needs a value")
            index += 1
            limits.check_text(f"extra_args[{index}]", args[index], limits.MAX_EXTRA_ARG_BYTES)
            value = args[index]
        if not EXTRA_FLAGS[flag].match(value):
            raise ConfigError(f"extra_args[{index}]: {flag} {value[:40]!r} does not match {EXTRA_FLAGS[flag].pattern}")
        checked.append(f"{flag}={value}")
        index += 1
    return checked


def eval_command(model: str, adapter: str, data: str, split: str, limit: int, extra_args: list[str],
                 out: Path) -> list[str]:
    argv = [sys.executable, "-m", "spelltransfer.platform.eval_job", "--model", model, "--data", data,
            "--split", split, "--out", str(out), "--limit", str(limit)]
    if adapter:
        argv += ["--adapter", adapter]
    return argv + list(extra_args)


class Evaluator:
    """Run evaluations, yielding progress dicts and finally the result."""

    def __init__(self, work_dir: str | Path | None = None, command=eval_command, poll_s: float = 0.5,
                 roots: ServiceRoots | None = None):
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="spelltransfer-eval-")).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.roots = roots or ServiceRoots.from_env()
        self._command = command
        self._poll_s = poll_s

    def evaluate(self, model: str, adapter: str, data: str, split: str = "validation", limit: int = 0,
                 extra_args: list[str] | None = None, is_active: Callable[[], bool] = lambda: True) -> Iterator[dict]:
        if not model:
            raise ConfigError("model: required (a model name such as smollm2-135m, or a folder)")
        for name, value in (("model", model), ("adapter", adapter), ("data", data), ("split", split)):
            limits.check_text(name, value or "", limits.MAX_PATH_BYTES)
        extra_args = check_extra_args(list(extra_args or []))
        self.roots.check_model("model", model)
        if not data:
            raise ConfigError("data: required (a dataset folder)")
        self.roots.check("data", "data", data)
        if not Path(data).is_dir():
            raise ConfigError(f"data: dataset folder {data!r} does not exist")
        if adapter:
            self.roots.check("data", "adapter", adapter)
        if adapter and not (Path(adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"adapter: {adapter!r} has no adapter_config.json")
        if split not in ("validation", "test", "train"):
            raise ConfigError(f"split: must be validation, test or train (got {split!r})")
        if limit < 0:
            raise ConfigError(f"limit: must be >= 0 (got {limit})")
        run_dir = Path(tempfile.mkdtemp(prefix="eval-", dir=self.work_dir))
        out = run_dir / "result.json"
        predictions = run_dir / "result.predictions.jsonl"
        argv = self._command(model, adapter, data, split, limit, extra_args, out)
        started = time.monotonic()
        child: subprocess.Popen = process.spawn(argv, run_dir / "eval.log")
        yield {"stage": "started", "elapsed_s": 0.0, "predictions": 0}
        try:
            while child.poll() is None:
                if not is_active():
                    process.stop_group(child.pid)
                    return
                time.sleep(self._poll_s)
                yield {"stage": "running", "elapsed_s": time.monotonic() - started,
                       "predictions": _count_lines(predictions)}
        finally:
            if child.poll() is None:
                process.stop_group(child.pid)
        if child.returncode != 0 or not out.is_file():
            tail = (run_dir / "eval.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            if child.returncode == 2:  # the CLI's exit code for a SpellTransferError (bad input)
                raise ConfigError(f"evaluation rejected its input: {tail[0]}")
            raise UnavailableError(f"evaluation failed (exit {child.returncode}): {tail[0]}")
        result = json.loads(out.read_text())
        yield {"stage": "done", "elapsed_s": time.monotonic() - started, "predictions": _count_lines(predictions),
               "result": result}


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))
    except FileNotFoundError:
        return 0
