"""Helpers shared by the platform tests (not fixtures: plain functions)."""

from __future__ import annotations

import time


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.2):
    """``predicate()``'s first truthy value, polled until ``timeout_s``; AssertionError naming ``what`` after."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
