"""Fixtures for the hardening tests (issue 17): a fresh token, and service roots that allow the
repository's default folders and the tests' temp folders, as the platform tests have."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from spelltransfer.platform.security import CA_ENV, CERT_ENV, KEY_ENV, TOKEN_ENV

# Spelled out (not imported) so the fixtures also load against code older than the roots module.
ROOT_DEFAULTS = {"configs": ("configs",), "data": ("data", "results", "checkpoints", "models"),
                 "results": ("results", "checkpoints"), "storage": ("results",)}


@pytest.fixture(autouse=True)
def api_token(monkeypatch) -> str:
    token = secrets.token_urlsafe(16)
    monkeypatch.setenv(TOKEN_ENV, token)
    for name in (CERT_ENV, KEY_ENV, CA_ENV):
        monkeypatch.delenv(name, raising=False)
    return token


@pytest.fixture(autouse=True)
def service_roots(monkeypatch, tmp_path_factory, repo_root) -> str:
    """The roots every service started in a test gets; returns the temp root."""
    temp = str(tmp_path_factory.getbasetemp())
    for kind, folders in ROOT_DEFAULTS.items():  # spelltransfer.platform.roots.DEFAULTS
        monkeypatch.setenv(f"SPELLTRANSFER_{kind.upper()}_ROOTS",
                           os.pathsep.join([*(str(Path(repo_root) / d) for d in folders), temp]))
    return temp


@pytest.fixture
def base_config(repo_root) -> str:
    return str(Path(repo_root) / "configs" / "training" / "config.yaml")
