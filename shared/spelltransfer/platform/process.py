"""Child processes that die with their parent and can be stopped as a whole group.

A training run is a ``spelltransfer train`` subprocess. If its worker is killed with SIGKILL the
run must not live on (the restarted worker resumes it from its checkpoint instead, and two
processes writing one run folder would corrupt it), so each child:

- starts a new session, i.e. its own process group, so ``stop_group`` reaches its helpers too;
- asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``). The kernel ties this to
  the *thread* that forked, so spawn from a long-lived thread (the worker's supervisor thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: str | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own process group, stdout+stderr appended to ``log_path``."""
    parent = os.getpid()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            start_new_session=True, preexec_fn=lambda: _die_with_parent(parent),
        )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after ``grace_s``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def cmdline(pid: int) -> str:
    """The process's command line ('' if it is gone); used to check a stale pid is really ours."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
