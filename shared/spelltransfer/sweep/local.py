"""The embedded platform: a controller and N trainer workers as local processes on 127.0.0.1.

``run_local_sweep(spec)`` is what ``make demo``-style callers use: start everything with a fresh
random token, submit, follow, print the trial table, stop everything. ``LocalPlatform`` is the
same machinery with handles to kill and restart single processes (the reliability tests use it).
Every service is a real ``spelltransfer platform ...`` process talking real gRPC; children die
with this process (PR_SET_PDEATHSIG), so an interrupted demo leaves nothing behind.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console

from spelltransfer.platform import process
from spelltransfer.platform.roots import ENV_VARS as ROOTS_ENV_VARS
from spelltransfer.platform.security import TOKEN_ENV, SecuritySettings
from spelltransfer.safe_yaml import load_yaml
from spelltransfer.sweep.client import SweepClient, spec_text_for_submit, trials_table


class LocalPlatform:
    """Controller + workers as child processes; each can be killed and restarted on its port."""

    def __init__(self, work_dir: str | Path, n_workers: int = 2, slots: int = 1, env: dict[str, str] | None = None,
                 start_timeout_s: float = 60.0, pack_size: int = 1):
        self.work_dir = Path(work_dir).resolve()
        self.n_workers, self.slots, self.pack_size = n_workers, slots, pack_size
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault(TOKEN_ENV, secrets.token_urlsafe(24))
        # Only this process holds the token: the paths the spec names are its user's own, so the
        # services' roots (spelltransfer.platform.roots) are the whole file system unless set.
        for variable in ROOTS_ENV_VARS.values():
            self.env.setdefault(variable, "/")
        self.env.setdefault("SPELLTRANSFER_LOG_LEVEL", "INFO")
        self.start_timeout_s = start_timeout_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}

    # -- lifecycle
    def start(self) -> "LocalPlatform":
        self.start_controller()
        for index in range(self.n_workers):
            self.start_worker(index)
        self.wait_for_workers(self.n_workers)
        return self

    def start_controller(self) -> None:
        self._start("controller", ["controller", "--state-dir", str(self.work_dir / "controller")])

    def start_worker(self, index: int) -> None:
        self._start(f"worker{index}", ["trainer", "--work-dir", str(self.work_dir / f"worker{index}"),
                                       "--slots", str(self.slots), "--pack-size", str(self.pack_size),
                                       "--controller", self.controller_address])

    @property
    def controller_address(self) -> str:
        return f"127.0.0.1:{self.ports['controller']}"

    def worker_address(self, index: int) -> str:
        return f"127.0.0.1:{self.ports[f'worker{index}']}"

    def _start(self, name: str, args: list[str]) -> None:
        port_file = self.work_dir / "ports" / name
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)
        port = self.ports.get(name, 0)  # a restart reuses the port, so peers find it again
        argv = [sys.executable, "-m", "spelltransfer.cli", "platform", *args, "--port", str(port),
                "--port-file", str(port_file)]
        child = process.spawn(argv, self.work_dir / "logs" / f"{name}.log", env=self.env)
        self.procs[name] = child
        deadline = time.monotonic() + self.start_timeout_s
        while not port_file.exists():
            if child.poll() is not None:
                raise RuntimeError(f"{name} exited with {child.returncode}; see {self.work_dir / 'logs' / name}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not start within {self.start_timeout_s:.0f}s")
            time.sleep(0.05)
        self.ports[name] = int(port_file.read_text())

    def wait_for_workers(self, count: int, timeout_s: float = 30.0) -> None:
        client = self.client()
        deadline = time.monotonic() + timeout_s
        try:
            while sum(w.reachable for w in client.workers()) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(client.workers())} of {count} workers registered")
                time.sleep(0.2)
        finally:
            client.close()

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Signal one service process (SIGKILL = crash: no cleanup runs)."""
        child = self.procs[name]
        child.send_signal(signum)
        child.wait(timeout=30)

    def stop(self) -> None:
        for name, child in reversed(list(self.procs.items())):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.procs.values():
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def client(self) -> SweepClient:
        return SweepClient(self.controller_address, SecuritySettings(token=self.env[TOKEN_ENV]))

    def __enter__(self) -> "LocalPlatform":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_local_sweep(spec_path: str | Path, n_workers: int = 2, slots: int = 1, work_dir: str | Path | None = None,
                    console: Console | None = None, overrides: list[str] | None = None, pack_size: int = 1):
    """Run a sweep through real local services and print its table; returns the final Sweep message.

    ``pack_size`` > 1: each worker trains up to that many of its ``slots`` trials as one packed
    process on one base model (docs/platform.md, "Packed workers").

    ``overrides`` (``section.key=value``) are appended to the spec's fixed overrides, e.g. the
    dataset folder a caller just built: ``["training.data_dir=results/demo/data"]``.
    """
    console = console or Console()
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="spelltransfer-sweep-"))
    started = time.monotonic()
    with LocalPlatform(work_dir, n_workers=n_workers, slots=slots, pack_size=pack_size) as platform:
        console.print(f"controller {platform.controller_address}, workers "
                      f"{', '.join(platform.worker_address(i) for i in range(n_workers))}; logs in {work_dir / 'logs'}")
        client = platform.client()
        text = spec_text_for_submit(Path(spec_path))
        if overrides:
            data = load_yaml(text, str(spec_path))
            data["overrides"] = list(data.get("overrides") or []) + list(overrides)
            text = yaml.safe_dump(data, sort_keys=False)
        sweep = client.submit_text(text, str(spec_path))
        console.print(f"sweep [bold]{sweep.name}[/]: {sweep.max_trials} trials on {n_workers} worker(s)")
        final = sweep
        for event in client.watch(sweep.name):
            final = event.sweep
            if event.kind in ("trial_started", "trial_finished", "trial_retry", "trial_pruned", "trial_rejected",
                              "champion_registered", "champion_failed"):
                number = f" #{event.trial_number}" if event.trial_number >= 0 else ""
                console.print(f"[dim]{time.monotonic() - started:6.0f}s[/] {event.kind}{number} {event.message}",
                              highlight=False)
        client.close()
    console.print(trials_table(final))
    console.print(f"{len(final.trials)} trials in {time.monotonic() - started:.0f}s; table: {final.trials_csv}")
    return final
