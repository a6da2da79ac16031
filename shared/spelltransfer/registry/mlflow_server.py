"""The MLflow tracking server: runs + model registry in SQL, artifacts proxied to S3.

``--serve-artifacts`` makes the server the only holder of S3 keys: trainers, the evaluator and
``registry pull`` talk HTTP to it (``mlflow-artifacts:/`` URIs) and never see a secret.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from spelltransfer.processes import Foreground
from spelltransfer.processes import run_in_foreground as supervise_in_foreground
from spelltransfer.registry import processes
from spelltransfer.registry.credentials import S3Credentials
from spelltransfer.registry.errors import ServerStartError


DB_PASSWORD_FILE_ENV = "SPELLTRANSFER_MLFLOW_DB_PASSWORD_FILE"


def mlflow_command(backend_store_uri: str, bucket: str, host: str, port: int, workers: int = 1,
                   basic_auth: bool = False) -> list[str]:
    """The one command line both ``registry up`` (detached) and ``registry serve`` (compose) run."""
    login = ["--app-name", "basic-auth"] if basic_auth else []  # registry.mlflow_auth
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", f"s3://{bucket}",
        "--serve-artifacts",
        "--host", host, "--port", str(port), "--workers", str(workers), *login,
    ]


def mlflow_env(credentials: S3Credentials, s3_endpoint_url: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: S3 keys (only the server holds them), endpoint, fast S3 failures."""
    base = dict(os.environ if base is None else base)
    env = {key: value for key, value in base.items() if not key.startswith(("AWS_", "SPELLTRANSFER_S3_"))}
    env.update(credentials.server_env())
    env.update(MLFLOW_S3_ENDPOINT_URL=s3_endpoint_url, AWS_DEFAULT_REGION="us-east-1")
    # The server's own boto3 must give up fast when S3 is down, so clients (the outbox) see the
    # failure and back off instead of holding a request open for minutes.
    env.setdefault("AWS_MAX_ATTEMPTS", "2")
    # Server-side jobs (GenAI scorers) spawn ~8 huey workers: seconds of start time and memory
    # this registry never uses.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # A PostgreSQL password from a secrets file reaches libpq as PGPASSWORD, never the URL/argv.
    if base.get(DB_PASSWORD_FILE_ENV):
        env["PGPASSWORD"] = Path(base[DB_PASSWORD_FILE_ENV]).read_text(encoding="utf-8").strip()
    return env


def start_mlflow(
    backend_store_uri: str, bucket: str, s3_endpoint_url: str, credentials: S3Credentials,
    host: str, port: int, log_path: Path, workers: int = 1, cwd: Path | None = None,
) -> dict:
    """Start ``mlflow server`` detached; returns its process record with ``url``."""
    command = mlflow_command(backend_store_uri, bucket, host, port, workers)
    record = processes.spawn(command, mlflow_env(credentials, s3_endpoint_url), log_path, cwd=cwd)
    record.update(url=f"http://{host}:{port}", port=port, backend_store_uri=_redact(backend_store_uri))
    return record


def _redact(uri: str) -> str:
    """A PostgreSQL URL's password never goes into state files or status output."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        userinfo, host = rest.rsplit("@", 1)
        if ":" in userinfo:
            return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
    return uri


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def wait_ready(url: str, timeout: float, record: dict | None = None) -> float:
    """Poll ``/health`` until OK; returns seconds waited. Raises with the log tail on failure."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if record is not None and not processes.is_running(record):
            raise ServerStartError(
                f"mlflow server exited during start; see {record['log']}:\n{processes.log_tail(record['log'])}"
            )
        if is_healthy(url):
            return time.monotonic() - start
        time.sleep(0.25)
    raise ServerStartError(f"mlflow server at {url} not healthy after {timeout:.0f} s; see {record and record['log']}")


def run_in_foreground(prepare: Callable[[], tuple[list[str], dict[str, str]]], cwd: Path | None = None) -> int:
    """``registry serve``: run ``prepare()`` (wait for S3, make the bucket; returns the command and
    its env), then that command until it exits; returns its exit code. SIGTERM/SIGINT at any
    point stop mlflow's whole group (uvicorn and its workers) and return 0
    (``spelltransfer.processes.run_in_foreground`` owns that)."""

    def start(foreground: Foreground) -> None:
        command, env = prepare()
        foreground.spawn(command, env=env, cwd=cwd)

    return supervise_in_foreground(start, "mlflow server")
