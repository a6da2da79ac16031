"""Child processes that die with their parent and can be stopped as a whole group.

A training run is a ``spelltransfer train`` subprocess. If its worker is killed with SIGKILL the
run must not live on (the restarted worker resumes it from its checkpoint instead, and two
processes writing one run folder would corrupt it), so each child:

- starts a new session, i.e. its own process group, so ``stop_group`` reaches its helpers too;
- asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``). The kernel ties this to
  the *thread* that forked, so spawn from a long-lived thread (the worker's supervisor thread).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from spelltransfer.processes import group_alive, signal_group, stop_group  # noqa: F401  (written once there; callers use process.*)

# Runs in the child instead of a ``preexec_fn``: Python code between fork and exec is unsafe in a
# threaded parent (gRPC servers are), and was seen to crash there. This tiny interpreter sets
# PR_SET_PDEATHSIG (kept across execve), checks the parent is still the one that forked it, then
# execs the real command, so the command itself runs with the death signal armed.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(1)  # the parent died before prctl took effect\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: str | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own process group, stdout+stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
    with open(log_path, "ab") as log:
        return subprocess.Popen(wrapped, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)


def cmdline(pid: int) -> str:
    """The process's command line ('' if it is gone); used to check a stale pid is really ours."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
