"""Serving fixtures: small real PEFT adapters and ONE real vLLM server per test module.

Adapters come from ``serving_helpers.make_lora_adapter`` (real PEFT folders, non-zero weights).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from serving_helpers import make_lora_adapter


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_model_path) -> Path:
    return make_lora_adapter(tiny_model_path, tmp_path_factory.mktemp("tiny-adapter"), r=4, b_std=0.5)


@pytest.fixture(scope="session")
def serve_python(repo_root) -> str:
    """The serve env's python, built by ``make serve-env`` if missing (a no-op when up to date)."""
    from spelltransfer.serving.vllm_server import find_serve_python

    subprocess.run(["make", "-s", "serve-env"], cwd=repo_root, check=True)
    return find_serve_python()
