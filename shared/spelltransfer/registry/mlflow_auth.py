"""A login for the MLflow server whenever it is reachable from other machines.

MLflow's ``basic-auth`` app (Flask-WTF, extra ``[track]``) asks every request for a user and
password; the admin user is created from ``SPELLTRANSFER_MLFLOW_ADMIN_PASSWORD_FILE`` on the first
start (MLflow ignores a changed password once the user exists: rotate it through its API).
``registry serve`` turns it on when that file is set, and refuses a non-loopback ``--host``
without it: the server holds the S3 keys (artifact proxy), so an anonymous client could read and
overwrite every adapter and the champion. ``registry up`` binds loopback only (``RegistryConfig``).

Clients send the login through MLflow's own ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``
(the outbox reads them too); ``SPELLTRANSFER_MLFLOW_PASSWORD_FILE`` fills the password from a
secrets file, so in compose it never appears in the file or in ``docker inspect``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Mapping, MutableMapping

from spelltransfer.errors import ConfigError
from spelltransfer.registry.config import is_loopback_host
from spelltransfer.registry.credentials import read_secret_file

ADMIN_PASSWORD_FILE_ENV = "SPELLTRANSFER_MLFLOW_ADMIN_PASSWORD_FILE"
CLIENT_PASSWORD_FILE_ENV = "SPELLTRANSFER_MLFLOW_PASSWORD_FILE"
ADMIN_USER = "admin"
AUTH_CONFIG_NAME = "mlflow-auth.ini"


def server_auth_env(host: str, home: Path, env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The variables that turn on MLflow's basic-auth app, or None (loopback without a password).

    Raises ``ConfigError`` naming the setting for a non-loopback host without a password file."""
    env = os.environ if env is None else env
    if not env.get(ADMIN_PASSWORD_FILE_ENV):
        if is_loopback_host(host):
            return None
        raise ConfigError(
            f"registry serve --host {host}: an MLflow server reachable from other machines needs a login; "
            f"set {ADMIN_PASSWORD_FILE_ENV} to a file holding the admin password (clients: "
            f"MLFLOW_TRACKING_USERNAME={ADMIN_USER} and {CLIENT_PASSWORD_FILE_ENV}), or bind --host 127.0.0.1"
        )
    password = read_secret_file(env[ADMIN_PASSWORD_FILE_ENV], ADMIN_PASSWORD_FILE_ENV)
    home.mkdir(parents=True, exist_ok=True)
    config = home / AUTH_CONFIG_NAME
    # No password in the file: MLflow reads it from MLFLOW_AUTH_ADMIN_PASSWORD. Authenticated
    # users other than the admin get nothing they were not granted.
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{(home / 'mlflow-auth.db').resolve()}\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        encoding="utf-8",
    )
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config.resolve()), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            # Signs the UI's CSRF tokens; the workers of one start share it, a new start makes another.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": env.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32)}


def apply_client_password_file(env: MutableMapping[str, str] | None = None) -> None:
    """``SPELLTRANSFER_MLFLOW_PASSWORD_FILE`` → ``MLFLOW_TRACKING_PASSWORD`` (user ``admin`` unless set)."""
    env = os.environ if env is None else env
    if env.get(CLIENT_PASSWORD_FILE_ENV) and not env.get("MLFLOW_TRACKING_PASSWORD"):
        env["MLFLOW_TRACKING_PASSWORD"] = read_secret_file(env[CLIENT_PASSWORD_FILE_ENV], CLIENT_PASSWORD_FILE_ENV)
        env.setdefault("MLFLOW_TRACKING_USERNAME", ADMIN_USER)
