"""Process groups and ports, written once for every launcher (platform workers, the registry
stack, the vLLM server), and the foreground supervisor of ``registry serve`` and ``serve
inference`` (``run_in_foreground``).

Each child is started in its own session, so its process group reaches the helpers it forks
(uvicorn workers, vLLM's engine core); stopping signals the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):
    """SIGTERM/SIGINT arrived while ``run_in_foreground``'s ``start`` ran and before it had a child
    to forward the signal to (a BaseException, so no ``except Exception`` on the way, in boto3,
    requests or ours, swallows it)."""


class Foreground:
    """What ``run_in_foreground`` hands its ``start``: ``spawn`` starts THE child, in its own
    process group, with the stop signals blocked until it is recorded -- so a signal always finds
    either no child (``StopRequested`` is raised in ``start``) or this one (it is forwarded)."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.stopping: list[int] = []

    def spawn(self, command: list[str], **popen_kwargs) -> subprocess.Popen:
        if self.child is not None:
            raise RuntimeError("run_in_foreground supervises one child; spawn was called twice")
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.child = subprocess.Popen(
                command, start_new_session=True, **popen_kwargs,
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return self.child

    def _on_signal(self, signum, frame) -> None:
        self.stopping.append(signum)
        if self.child is None:
            raise StopRequested(signum)
        signal_group(self.child.pid, signal.SIGTERM)


def run_in_foreground(start: Callable[[Foreground], object], name: str, grace_s: float = 20.0) -> int:
    """Run ``start(foreground)`` -- whatever must happen first (wait for S3, wait for the server to
    answer), and ``foreground.spawn(command, ...)`` for the one long-running child -- then wait
    for that child; returns its exit code, or 0 when stopped by SIGTERM/SIGINT.

    SIGTERM/SIGINT (``docker stop``, systemd, Ctrl-C) at any point mean a clean stop: before the
    child exists the handler raises ``StopRequested`` inside ``start`` (which cleans up what it
    began); once it exists the handler only forwards SIGTERM to the child's group, and the main
    thread -- the one waiting on the child -- waits for the whole group to be gone (SIGKILL
    after ``grace_s``: uvicorn's workers, vLLM's engine core). An error ``start`` raises after a
    stop signal (a server told to stop while it was starting exits early) is part of that stop.
    Exit 0 and one line "<name> stopped (SIGTERM)" on stderr, no traceback. ``os.exec`` would leave
    the child's first seconds, before it installs handlers of its own, to the default: exit 143.
    """
    foreground = Foreground()
    previous = {signum: signal.signal(signum, foreground._on_signal) for signum in STOP_SIGNALS}
    code = 0
    try:
        try:
            start(foreground)
            if foreground.child is None:
                raise RuntimeError(f"{name}: start() returned without spawning the child")
            code = foreground.child.wait()
        except (StopRequested, KeyboardInterrupt):
            foreground.stopping.append(signal.SIGTERM)
        except Exception:
            if not foreground.stopping:
                raise
    finally:
        child = foreground.child
        if child is not None:
            stop_group(child.pid, grace_s, alive=lambda: child.poll() is None or group_alive(child.pid),
                       poll_s=0.1, kill_wait_s=5.0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if foreground.stopping:
        print(f"{name} stopped ({signal.Signals(foreground.stopping[0]).name})", file=sys.stderr, flush=True)
        return 0
    return code
