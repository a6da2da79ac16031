"""Where the registry stack lives and how it is reached: one typed config, read once from the env.

Every field can be set by an environment variable (the names below are the ones
``docker-compose.gpu.yml`` and ``docs/registry.md`` use), so a trainer container and a laptop
share one code path: with ``s3_endpoint_url`` set, an external S3 (MinIO) is used and no
``weed`` process is started; with ``tracking_uri`` set, an external MLflow server is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spelltransfer.errors import ConfigError

HOME_ENV = "SPELLTRANSFER_REGISTRY_HOME"
BUCKET_ENV = "SPELLTRANSFER_S3_BUCKET"
S3_ENDPOINT_ENV = "SPELLTRANSFER_S3_ENDPOINT_URL"
BACKEND_STORE_ENV = "SPELLTRANSFER_MLFLOW_BACKEND_STORE_URI"
MLFLOW_PORT_ENV = "SPELLTRANSFER_MLFLOW_PORT"
S3_PORT_ENV = "SPELLTRANSFER_S3_PORT"
OUTBOX_ENV = "SPELLTRANSFER_OUTBOX_DIR"
DEFAULT_BUCKET = "spelltransfer-artifacts"


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``: reachable from this machine only."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_home() -> Path:
    """``$SPELLTRANSFER_REGISTRY_HOME`` or ``$XDG_STATE_HOME/spelltransfer/registry`` (not the repo)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "spelltransfer" / "registry"


class RegistryConfig(BaseModel):
    """The local stack: S3 (``weed mini`` unless ``s3_endpoint_url``) + an MLflow tracking server."""

    model_config = ConfigDict(frozen=True)

    home: Path = Field(default_factory=default_home, description="state files, logs, S3 data, sqlite db")
    host: str = Field("127.0.0.1", description="interface both servers bind to")
    bucket: str = Field(DEFAULT_BUCKET, description="S3 bucket MLflow stores artifacts in (created on up)")
    s3_endpoint_url: str | None = Field(None, description="external S3 (MinIO); None = start weed mini")
    s3_port: int = Field(0, ge=0, le=65535, description="weed's S3 port; 0 = a free port, kept across ups")
    mlflow_port: int = Field(0, ge=0, le=65535, description="MLflow port; 0 = a free port, kept across ups")
    backend_store_uri: str | None = Field(None, description="sqlite:///… (default, in home) or postgresql://…")
    mlflow_workers: int = Field(1, ge=1, description="uvicorn workers; 1 is plenty on a laptop")
    startup_timeout_s: float = Field(90.0, gt=0, description="how long up waits for each server")

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        # The embedded stack's MLflow answers without a login (its artifact proxy holds the S3
        # keys), so it is reachable from this machine only. Compose runs MLflow with
        # `registry serve` (with a login: registry.mlflow_auth) on its internal network instead.
        if not is_loopback_host(host):
            raise ValueError(f"host {host!r}: the local stack binds loopback only (127.0.0.1, ::1): "
                             "its MLflow server has no login")
        return host

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, bucket: str) -> str:
        # S3 naming rules (lowercase, 3-63, no underscores): MinIO and seaweed both enforce them.
        if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in "-." for c in bucket):
            raise ValueError(f"bucket {bucket!r}: use 3-63 lowercase letters, digits, '-' or '.'")
        return bucket

    @property
    def resolved_backend_store_uri(self) -> str:
        return self.backend_store_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def state_file(self) -> Path:
        return self.home / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def s3_data_dir(self) -> Path:
        return self.home / "s3-data"

    @property
    def generated_credentials_file(self) -> Path:
        return self.home / "credentials"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "RegistryConfig":
        """Build from ``SPELLTRANSFER_*`` variables; explicit ``overrides`` (non-None) win."""
        env = os.environ if env is None else env
        values: dict = {}
        for field, variable in [
            ("home", HOME_ENV), ("bucket", BUCKET_ENV), ("s3_endpoint_url", S3_ENDPOINT_ENV),
            ("backend_store_uri", BACKEND_STORE_ENV), ("mlflow_port", MLFLOW_PORT_ENV), ("s3_port", S3_PORT_ENV),
        ]:
            if env.get(variable):
                values[field] = env[variable]
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls(**values)
        except ValueError as error:  # pydantic.ValidationError is a ValueError
            first = error.errors()[0] if hasattr(error, "errors") else {"loc": ("?",), "msg": str(error)}
            raise ConfigError(f"registry config field {first['loc'][0]}: {first['msg']}") from None
