"""Detached server processes that outlive the command that started them.

``registry up`` and ``registry down`` are separate invocations, so each server runs in its own
session (process group) and is remembered by pid + start time: a recycled pid is never
mistaken for our server, and ``down`` signals the whole group (mlflow's uvicorn workers too).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import psutil

from spelltransfer.processes import free_port, signal_group, stop_group  # noqa: F401  (free_port: processes.free_port callers)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(command: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None, umask: int = -1) -> dict:
    """Start ``command`` detached, output appended to ``log_path``; returns {pid, create_time, log}."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, start_new_session=True, close_fds=True, umask=umask,
        )
    return {"pid": process.pid, "create_time": psutil.Process(process.pid).create_time(), "log": str(log_path)}


def is_running(record: dict | None) -> bool:
    """True while the process in ``record`` (from ``spawn``) is alive and is the same process."""
    if not record:
        return False
    try:
        process = psutil.Process(record["pid"])
        return abs(process.create_time() - record["create_time"]) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _reap(pid: int) -> None:
    # When the caller is the parent (tests), collect the zombie so is_running sees it gone.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(record: dict | None, timeout: float = 15.0) -> bool:
    """SIGTERM the process group, SIGKILL after ``timeout``; True if something was stopped."""
    if not is_running(record):
        return False
    pid = record["pid"]

    def running() -> bool:
        _reap(pid)
        return is_running(record)

    if not stop_group(pid, timeout, alive=running, poll_s=0.1, kill_wait_s=0.2):
        return False
    signal_group(pid, signal.SIGKILL)   # workers left in the group (uvicorn children) go too
    return True


def log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
