"""Fixtures for the hardening tests (issue 17): a fresh token, and service roots that allow the
repository's default folders and the tests' temp folders, as the platform tests have."""

from __future__ import annotations

from pathlib import Path

import pytest

from service_env import api_token, evaluator, service_roots  # noqa: F401  (fixtures)


@pytest.fixture
def base_config(repo_root) -> str:
    return str(Path(repo_root) / "configs" / "training" / "config.yaml")
