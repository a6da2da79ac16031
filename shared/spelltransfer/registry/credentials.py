"""S3 credentials from the environment or from files — never from code, never printed.

Lookup order for each of the two values (first hit wins):

1. ``SPELLTRANSFER_S3_ACCESS_KEY_ID`` / ``SPELLTRANSFER_S3_SECRET_ACCESS_KEY``
2. ``SPELLTRANSFER_S3_ACCESS_KEY_ID_FILE`` / ``SPELLTRANSFER_S3_SECRET_ACCESS_KEY_FILE``
   (a path whose content is the value — the Docker/Kubernetes secrets convention)
3. ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (what boto3, MLflow and MinIO clients read)

The project-specific names come first so a developer's personal AWS keys are never sent to the
local S3 server by accident. The secret is held in a ``pydantic.SecretStr``: its ``repr`` and
``str`` are ``**********``, so a stray log line or traceback cannot leak it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Mapping

from pydantic import BaseModel, ConfigDict, SecretStr

from spelltransfer.registry.errors import CredentialsError

ACCESS_KEY_ENV = "SPELLTRANSFER_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "SPELLTRANSFER_S3_SECRET_ACCESS_KEY"
ACCESS_KEY_FILE_ENV = "SPELLTRANSFER_S3_ACCESS_KEY_ID_FILE"
SECRET_KEY_FILE_ENV = "SPELLTRANSFER_S3_SECRET_ACCESS_KEY_FILE"
AWS_ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
AWS_SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"


class S3Credentials(BaseModel):
    """An access key pair; ``secret_access_key`` never prints."""

    model_config = ConfigDict(frozen=True)

    access_key_id: str
    secret_access_key: SecretStr
    source: str = "environment"

    def server_env(self) -> dict[str, str]:
        """Variables a child process (weed, mlflow server, boto3) reads the keys from."""
        return {
            AWS_ACCESS_KEY_ENV: self.access_key_id,
            AWS_SECRET_KEY_ENV: self.secret_access_key.get_secret_value(),
        }

    def boto3_kwargs(self) -> dict[str, str]:
        return {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key.get_secret_value(),
        }


def read_secret_file(path_text: str, variable: str) -> str:
    path = Path(path_text).expanduser()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise CredentialsError(f"{variable}={path}: cannot read the file ({error.strerror})") from None
    if not value:
        raise CredentialsError(f"{variable}={path}: the file is empty")
    return value


def _lookup(env: Mapping[str, str], direct: str, file_var: str, aws: str) -> tuple[str, str] | None:
    if env.get(direct):
        return env[direct], direct
    if env.get(file_var):
        return read_secret_file(env[file_var], file_var), file_var
    if env.get(aws):
        return env[aws], aws
    return None


def credentials_configured(env: Mapping[str, str] | None = None) -> bool:
    """True if any credential variable is set (then a problem with it is an error, not a cue to generate)."""
    env = os.environ if env is None else env
    names = (ACCESS_KEY_ENV, SECRET_KEY_ENV, ACCESS_KEY_FILE_ENV, SECRET_KEY_FILE_ENV, AWS_ACCESS_KEY_ENV, AWS_SECRET_KEY_ENV)
    return any(env.get(name) for name in names)


def load_credentials(env: Mapping[str, str] | None = None, fallback_file: Path | None = None) -> S3Credentials:
    """Credentials from ``env`` (default ``os.environ``), else from ``fallback_file`` if it exists.

    ``fallback_file`` is the pair ``registry up`` generated for an embedded stack (two lines:
    access key, secret; mode 0600). Raises ``CredentialsError`` naming the variables to set.
    """
    env = os.environ if env is None else env
    access = _lookup(env, ACCESS_KEY_ENV, ACCESS_KEY_FILE_ENV, AWS_ACCESS_KEY_ENV)
    secret = _lookup(env, SECRET_KEY_ENV, SECRET_KEY_FILE_ENV, AWS_SECRET_KEY_ENV)
    if access and secret:
        return S3Credentials(
            access_key_id=access[0], secret_access_key=SecretStr(secret[0]), source=f"{access[1]}, {secret[1]}"
        )
    if access or secret:
        missing = SECRET_KEY_ENV if access else ACCESS_KEY_ENV
        raise CredentialsError(f"S3 credentials are incomplete: set {missing} (or its _FILE or AWS_ form)")
    if fallback_file is not None and fallback_file.exists():
        lines = fallback_file.read_text(encoding="utf-8").split()
        if len(lines) != 2:
            raise CredentialsError(f"{fallback_file}: expected two lines (access key id, secret key)")
        return S3Credentials(access_key_id=lines[0], secret_access_key=SecretStr(lines[1]), source=str(fallback_file))
    raise CredentialsError(
        f"no S3 credentials: set {ACCESS_KEY_ENV} and {SECRET_KEY_ENV} "
        f"(or {ACCESS_KEY_FILE_ENV}/{SECRET_KEY_FILE_ENV}, or {AWS_ACCESS_KEY_ENV}/{AWS_SECRET_KEY_ENV})"
    )


def generate_credentials_file(path: Path) -> S3Credentials:
    """Create a random key pair in ``path`` (mode 0600) for an embedded stack with no keys set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    access, secret = "st" + secrets.token_hex(8), secrets.token_urlsafe(30)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"{access}\n{secret}\n")
    return S3Credentials(access_key_id=access, secret_access_key=SecretStr(secret), source=str(path))
