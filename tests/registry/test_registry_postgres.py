"""The MLflow server on PostgreSQL (what compose runs), with a real local postgres.

Skipped where no PostgreSQL server binaries exist. The password comes from a file via
SPELLTRANSFER_MLFLOW_DB_PASSWORD_FILE and must never reach the state file or the logs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from spelltransfer.registry import model_registry, processes
from spelltransfer.registry.config import RegistryConfig
from spelltransfer.registry.credentials import S3Credentials
from spelltransfer.registry.outbox import Outbox
from spelltransfer.registry.stack import RegistryStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.skipif(not (shutil.which("initdb") and shutil.which("pg_ctl")), reason="no PostgreSQL")]


def _as_postgres_user(command: str) -> list[str]:
    # initdb/postgres refuse to run as root; the Debian image has a `postgres` user for this.
    return ["su", "postgres", "-c", command] if os.geteuid() == 0 else ["sh", "-c", command]


def _run(command: str, timeout: float) -> None:
    result = subprocess.run(_as_postgres_user(command), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


@pytest.fixture
def postgres():
    # Not under pytest's tmp_path: its 0700 root-owned parents are closed to the postgres user.
    root = Path(tempfile.mkdtemp(prefix="spelltransfer-pg-"))
    password = "pg-Pw-" + os.urandom(8).hex()
    (root / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = processes.free_port()
    _run(f"initdb -D {root}/data -U mlflow --pwfile={root}/pw -A scram-sha-256", timeout=120)
    _run(f"pg_ctl -D {root}/data -o '-p {port} -k {root} -c listen_addresses=127.0.0.1' -l {root}/pg.log -w start",
         timeout=60)
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=mlflow password={password} dbname=postgres",
                             autocommit=True) as connection:
            connection.execute("CREATE DATABASE mlflow")
        yield {"port": port, "password": password, "password_file": root / "pw"}
    finally:
        subprocess.run(_as_postgres_user(f"pg_ctl -D {root}/data -m fast stop"), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_mlflow_on_postgres_registers_and_keeps_the_password_out(postgres, tmp_path, monkeypatch):
    import psycopg
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("SPELLTRANSFER_MLFLOW_DB_PASSWORD_FILE", str(postgres["password_file"]))
    config = RegistryConfig(home=tmp_path / "home", bucket="pg-artifacts",
                            backend_store_uri=f"postgresql+psycopg://mlflow@127.0.0.1:{postgres['port']}/mlflow")
    credentials = S3Credentials(access_key_id="pgkey", secret_access_key=SecretStr("pg-s3-" + os.urandom(8).hex()))
    stack = RegistryStack(config, credentials=credentials)
    started = time.monotonic()
    try:
        status = stack.up()
        print(f"\nweed + MLflow on PostgreSQL up in {time.monotonic() - started:.1f} s")
        client = MlflowClient(status.tracking_uri, registry_uri=status.tracking_uri)
        run_id = client.create_run(client.create_experiment("pg")).info.run_id
        client.log_metric(run_id, "eval/spelling_accuracy", 0.8)
        adapter = tmp_path / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text('{"r": 2}')
        (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 128)
        with Outbox(tmp_path / "outbox", status.tracking_uri, base_delay_s=0.2) as outbox:
            outbox.submit(adapter, run_id, "adapter")
            assert outbox.flush(60)
        client.set_terminated(run_id)
        model_registry.register_run(status.tracking_uri, run_id, "pg-lora", metric="eval/spelling_accuracy")
        pulled = model_registry.pull(status.tracking_uri, "pg-lora@champion", tmp_path / "pulled")
        assert (pulled / "adapter_model.safetensors").read_bytes() == b"\0" * 128
    finally:
        stack.down()
    with psycopg.connect(f"host=127.0.0.1 port={postgres['port']} user=mlflow password={postgres['password']} "
                         f"dbname=mlflow") as connection:
        rows = connection.execute("SELECT name, version, run_id FROM model_versions").fetchall()
        aliases = connection.execute("SELECT alias FROM registered_model_aliases").fetchall()
    assert rows == [("pg-lora", 1, run_id)] and aliases == [("champion",)]
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            assert postgres["password"].encode() not in path.read_bytes(), path
