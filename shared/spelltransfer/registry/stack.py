"""``registry up | down | status``: the S3 server and the MLflow server as one stack.

State lives in ``<home>/state.json`` (pids, ports, URLs — never keys), written atomically, so
separate invocations agree on what runs. ``up`` is idempotent: servers already running are kept.
Ports chosen on the first ``up`` are reused later (weed keys its metadata by port; clients keep
their tracking URI), unless they were taken meanwhile.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from spelltransfer.registry import mlflow_server, processes, s3
from spelltransfer.registry.atomic import write_json_atomic
from spelltransfer.registry.config import RegistryConfig
from spelltransfer.registry.credentials import (
    S3Credentials,
    credentials_configured,
    generate_credentials_file,
    load_credentials,
)
from spelltransfer.registry.errors import RegistryError


@dataclass
class StackStatus:
    s3_endpoint_url: str | None
    s3_running: bool
    s3_external: bool
    tracking_uri: str | None
    mlflow_running: bool
    bucket: str
    home: Path

    @property
    def healthy(self) -> bool:
        return self.s3_running and self.mlflow_running


class RegistryStack:
    """Start, stop and inspect the local S3 + MLflow pair described by a ``RegistryConfig``."""

    def __init__(self, config: RegistryConfig | None = None, credentials: S3Credentials | None = None):
        self.config = config or RegistryConfig.from_env()
        self._credentials = credentials

    # -- state -----------------------------------------------------------------------------
    def read_state(self) -> dict:
        try:
            return json.loads(self.config.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as error:
            raise RegistryError(f"{self.config.state_file}:{error.lineno}: corrupt state file ({error.msg})") from None

    def _write_state(self, state: dict) -> None:
        write_json_atomic(self.config.state_file, state)

    def credentials(self, generate: bool = False) -> S3Credentials:
        """Keys from env/files; for an embedded stack with none set, a generated 0600 file."""
        if self._credentials is None:
            fallback = self.config.generated_credentials_file
            embedded = self.config.s3_endpoint_url is None
            if generate and embedded and not credentials_configured() and not fallback.exists():
                self._credentials = generate_credentials_file(fallback)
            else:
                self._credentials = load_credentials(fallback_file=fallback)
        return self._credentials

    # -- lifecycle -------------------------------------------------------------------------
    def up(self) -> StackStatus:
        """Start whatever is not running: S3 (weed mini, unless external), bucket, MLflow."""
        config = self.config
        config.home.mkdir(parents=True, exist_ok=True)
        credentials = self.credentials(generate=True)
        state = self.read_state()
        if config.s3_endpoint_url:
            state["s3"] = {"endpoint_url": config.s3_endpoint_url, "external": True}
            s3.wait_ready(config.s3_endpoint_url, credentials, config.startup_timeout_s)
        elif not processes.is_running(state.get("s3")):
            ports = s3.allocate_weed_ports(config.host, config.s3_port, (state.get("s3") or {}).get("ports"))
            record = s3.start_weed(config.s3_data_dir, config.logs_dir / "s3.log", credentials, config.host, ports)
            state["s3"] = record
            self._write_state(state)
            try:
                s3.wait_ready(record["endpoint_url"], credentials, config.startup_timeout_s, record)
            except Exception:
                processes.stop(record)
                raise
        endpoint = state["s3"]["endpoint_url"]
        # Also when S3 was already running: keys that don't match it fail here, clearly, at once.
        s3.wait_ready(endpoint, credentials, config.startup_timeout_s)
        s3.ensure_bucket(endpoint, credentials, config.bucket)
        state["bucket"] = config.bucket

        if not processes.is_running(state.get("mlflow")):
            previous = (state.get("mlflow") or {}).get("port", 0)
            port = config.mlflow_port or (
                previous if previous and processes.port_is_free(config.host, previous) else processes.free_port()
            )
            if not processes.port_is_free(config.host, port):
                raise RegistryError(f"mlflow_port {port} on {config.host} is in use; choose another or 0")
            record = mlflow_server.start_mlflow(
                config.resolved_backend_store_uri, config.bucket, endpoint, credentials, config.host, port,
                config.logs_dir / "mlflow.log", workers=config.mlflow_workers, cwd=config.home,
            )
            state["mlflow"] = record
            self._write_state(state)
            try:
                record["startup_s"] = round(mlflow_server.wait_ready(record["url"], config.startup_timeout_s, record), 2)
            except Exception:
                processes.stop(record)
                raise
        state["started_at"] = state.get("started_at") or time.time()
        self._write_state(state)
        return self.status()

    def stop_s3(self) -> bool:
        """Stop only the S3 server (the outage test; MLflow keeps running)."""
        state = self.read_state()
        return processes.stop(state.get("s3"))

    def start_s3(self) -> StackStatus:
        """Start S3 again on the same ports and data dir (``up`` does exactly that)."""
        return self.up()

    def down(self) -> list[str]:
        """Stop MLflow, then S3; returns what was stopped. Data (db, S3 objects) stays in home."""
        state = self.read_state()
        # Both at once: each may take seconds to drain, neither depends on the other any more.
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = dict(zip(("mlflow", "s3"), pool.map(processes.stop, [state.get("mlflow"), state.get("s3")])))
        stopped = [name for name, was_running in results.items() if was_running]
        if state:
            state.pop("started_at", None)
            self._write_state(state)
        return stopped

    def status(self) -> StackStatus:
        state = self.read_state()
        s3_state = state.get("s3") or {}
        external = bool(s3_state.get("external"))
        mlflow_state = state.get("mlflow") or {}
        s3_running = processes.is_running(s3_state) if not external else True
        if s3_running and s3_state.get("endpoint_url"):
            url = urllib.parse.urlsplit(s3_state["endpoint_url"])
            default_port = 443 if url.scheme == "https" else 80
            s3_running = processes.port_accepts(url.hostname or "127.0.0.1", url.port or default_port)
        mlflow_running = processes.is_running(mlflow_state) and mlflow_server.is_healthy(mlflow_state.get("url", ""))
        return StackStatus(
            s3_endpoint_url=s3_state.get("endpoint_url"), s3_running=s3_running, s3_external=external,
            tracking_uri=mlflow_state.get("url"), mlflow_running=mlflow_running,
            bucket=state.get("bucket", self.config.bucket), home=self.config.home,
        )

    def tracking_uri(self) -> str:
        """The running server's URL; raises if the stack is not up."""
        status = self.status()
        if not status.mlflow_running:
            raise RegistryError(f"the MLflow server is not running (home {self.config.home}): run `spelltransfer registry up`")
        return status.tracking_uri
