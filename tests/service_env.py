"""The environment every platform service started by a test gets (used by tests/platform and
tests/security conftests): a fresh random API token, no TLS, and service roots that allow the
repository's default folders plus pytest's temp folders."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from spelltransfer.platform.security import CA_ENV, CERT_ENV, KEY_ENV, TOKEN_ENV, open_channel


@pytest.fixture(autouse=True)
def api_token(monkeypatch) -> str:
    """Every service and client in a test shares a fresh random token; no TLS unless a test sets it."""
    token = secrets.token_urlsafe(16)
    monkeypatch.setenv(TOKEN_ENV, token)
    for name in (CERT_ENV, KEY_ENV, CA_ENV):
        monkeypatch.delenv(name, raising=False)
    return token


@pytest.fixture(autouse=True)
def service_roots(monkeypatch, tmp_path_factory, repo_root) -> str:
    """Services accept paths under the repository's default roots and the tests' temp folders;
    returns the temp root."""
    from spelltransfer.platform.roots import DEFAULTS, ENV_VARS

    temp = str(tmp_path_factory.getbasetemp())
    for kind, variable in ENV_VARS.items():
        monkeypatch.setenv(variable, os.pathsep.join([*(str(Path(repo_root) / d) for d in DEFAULTS[kind]), temp]))
    return temp


@pytest.fixture
def evaluator(tmp_path):
    """A real evaluator service on 127.0.0.1 and a stub for it."""
    from services.evaluator.server import serve

    from spelltransfer.platform.protos import evaluator_pb2_grpc

    _, port, stop = serve(port=0, work_dir=str(tmp_path / "evals"))
    channel = open_channel(f"127.0.0.1:{port}")
    yield evaluator_pb2_grpc.EvaluatorServiceStub(channel)
    channel.close()
    stop()
