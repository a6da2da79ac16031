"""Process groups and ports, written once for every launcher (platform workers, the registry
stack, the vLLM server).

Each child is started in its own session, so its process group reaches the helpers it forks
(uvicorn workers, vLLM's engine core); stopping signals the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable


def free_port(host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    """A port nobody listens on now (and, for gRPC-offset servers, not in ``avoid``)."""
    avoid = avoid or set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port
    raise RuntimeError("no free port found")


def group_alive(pgid: int) -> bool:
    """True while any process of the group lives (one we may not signal counts as alive)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when it is gone or not ours to signal. Safe in a signal handler."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_group(pgid: int, grace_s: float = 5.0, *, alive: Callable[[], bool] | None = None, poll_s: float = 0.05,
               kill_wait_s: float = 0.0) -> bool:
    """SIGTERM the group, SIGKILL whatever is left after ``grace_s``, then wait up to ``kill_wait_s``
    for it to go. ``alive`` says when the stop is done (default: the group is empty). False if the
    group was already gone."""
    alive = alive or (lambda: group_alive(pgid))
    if not signal_group(pgid, signal.SIGTERM):
        return False
    if _wait_gone(alive, grace_s, poll_s):
        return True
    signal_group(pgid, signal.SIGKILL)
    _wait_gone(alive, kill_wait_s, poll_s)
    return True


def _wait_gone(alive: Callable[[], bool], timeout_s: float, poll_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return True
        time.sleep(poll_s)
    return not alive()
