"""spelltransfer.processes: the one process-group stop and free_port every launcher uses."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from spelltransfer.processes import free_port, group_alive, signal_group, stop_group

# A parent that ignores SIGTERM and forks a child that does too: only SIGKILL to the group ends both.
STUBBORN = ("import os, signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "os.fork()\n"
            "time.sleep(60)\n")


def _group(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(0.3)   # the child has forked and set its handler
    return proc


def test_free_port_is_bindable_and_avoids():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert free_port(avoid={port}) != port


def test_stop_group_terms_then_kills_the_whole_group():
    polite = _group("import time, os\nos.fork()\ntime.sleep(60)\n")
    # our child stays a zombie (a group member) until reaped: poll() reaps it, as a launcher's Popen does
    assert stop_group(polite.pid, grace_s=30.0, alive=lambda: polite.poll() is None or group_alive(polite.pid))
    polite.wait(5)
    assert polite.returncode == -signal.SIGTERM and not group_alive(polite.pid)   # SIGTERM was enough, no SIGKILL

    stubborn = _group(STUBBORN)
    started = time.monotonic()
    assert stop_group(stubborn.pid, grace_s=0.5, kill_wait_s=2.0)
    assert time.monotonic() - started >= 0.5
    stubborn.wait(5)
    assert not group_alive(stubborn.pid)


def test_a_gone_group_is_reported_not_raised():
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait(5)
    assert not signal_group(proc.pid, 0)
    assert not stop_group(proc.pid, grace_s=0.1)
