"""One real registry stack for all registry tests: ``weed mini`` S3 + MLflow server on 127.0.0.1.

The stack is started with the CLI (`spelltransfer registry up` in a subprocess) and stopped with
`spelltransfer registry down`, so the cross-invocation lifecycle (state file, pids, ports) is
exercised by every run. MLflow takes 8-45 s to start on a busy 2-core machine, so it is shared;
tests that stop S3 (the outage test) start it again before they return.

The S3 secret is random and distinctive; ``secret_leak_sources`` collects every log, state file
and captured output so a test can assert the secret appears in none of them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "spelltransfer.cli"]


@dataclass
class LiveStack:
    home: Path
    env: dict[str, str]
    access_key: str
    secret: str
    tracking_uri: str
    s3_endpoint_url: str
    bucket: str
    outputs: list[str] = field(default_factory=list)  # every captured stdout/stderr

    def cli_subprocess(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        """`spelltransfer ARGS` as its own process (what a user runs; exit code 2 on errors)."""
        result = subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        self.outputs += [result.stdout, result.stderr]
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def cli(self, *args: str, check: bool = True):
        """`spelltransfer ARGS` in this process (typer's runner): same code, no 5-10 s start-up."""
        from typer.testing import CliRunner

        from spelltransfer.cli import app

        result = CliRunner().invoke(app, list(args), env=self.env, catch_exceptions=True)
        self.outputs += [result.stdout, result.stderr, repr(result.exception)]
        if check and result.exit_code != 0:
            raise AssertionError(f"{args} exited {result.exit_code}: {result.output}\n{result.exception!r}")
        return result

    def credentials(self):
        from pydantic import SecretStr

        from spelltransfer.registry.credentials import S3Credentials

        return S3Credentials(access_key_id=self.access_key, secret_access_key=SecretStr(self.secret), source="test")

    def stack(self):
        from spelltransfer.registry.config import RegistryConfig
        from spelltransfer.registry.stack import RegistryStack

        return RegistryStack(RegistryConfig(home=self.home, bucket=self.bucket), credentials=self.credentials())


def _clean_env(home: Path, access_key: str, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SPELLTRANSFER_S3_", "MLFLOW_TRACKING_", "SPELLTRANSFER_REGISTRY"))}
    env.update(
        SPELLTRANSFER_REGISTRY_HOME=str(home), SPELLTRANSFER_S3_ACCESS_KEY_ID=access_key,
        SPELLTRANSFER_S3_SECRET_ACCESS_KEY=secret, SPELLTRANSFER_S3_BUCKET="st-test-artifacts",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory) -> LiveStack:
    """Start the stack via the CLI, yield it, stop it via the CLI and check nothing is left running."""
    from spelltransfer.registry import processes

    home = tmp_path_factory.mktemp("registry-home")
    access_key = "sttest" + secrets.token_hex(4)
    secret = "Sp3ll-S3CRET-" + secrets.token_hex(12)
    env = _clean_env(home, access_key, secret)
    stack = LiveStack(home, env, access_key, secret, "", "", "st-test-artifacts")
    stack.cli_subprocess("registry", "up", timeout=240)
    state = stack.stack().read_state()
    stack.tracking_uri = state["mlflow"]["url"]
    stack.s3_endpoint_url = state["s3"]["endpoint_url"]
    try:
        yield stack
    finally:
        down = stack.cli_subprocess("registry", "down", check=False)
        state = stack.stack().read_state()
        leftovers = [name for name in ("mlflow", "s3") if processes.is_running(state.get(name))]
        for name in leftovers:  # never leave a server behind, even when down is broken
            processes.stop(state.get(name))
        assert down.returncode == 0, down.stderr
        assert not leftovers, f"still running after `registry down`: {leftovers}"


@pytest.fixture
def mlflow_client(live_stack):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=live_stack.tracking_uri, registry_uri=live_stack.tracking_uri)
