"""`spelltransfer registry up|down|status|env|register|pull|outbox`: the MLflow + S3 registry.

    spelltransfer registry up                 # weed mini S3 + mlflow server on 127.0.0.1
    eval "$(spelltransfer registry env)"      # MLFLOW_TRACKING_URI for this shell
    spelltransfer registry register --sweep-run-id RUN --name spelling-lora --metric eval/spelling_accuracy
    spelltransfer registry pull spelling-lora@champion --out adapters/champion
    spelltransfer registry outbox drain --dir DIR   # upload what a stopped trainer left behind
    spelltransfer registry down

Credentials: SPELLTRANSFER_S3_ACCESS_KEY_ID / SPELLTRANSFER_S3_SECRET_ACCESS_KEY (or *_FILE, or
AWS_*); with none set, ``up`` generates a pair in ``<home>/credentials`` (mode 0600).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from spelltransfer.registry.config import OUTBOX_ENV, RegistryConfig

registry_app = typer.Typer(help="MLflow tracking server + S3 artifacts + model registry.", no_args_is_help=True)
console = Console()

HomeOption = typer.Option(None, "--home", help="State folder (default $SPELLTRANSFER_REGISTRY_HOME or ~/.local/state/spelltransfer/registry).")
TrackingOption = typer.Option(None, "--tracking-uri", help="Default: $MLFLOW_TRACKING_URI, else the local stack's server.")


def _stack(home: Optional[Path], **overrides):
    from spelltransfer.registry.stack import RegistryStack

    return RegistryStack(RegistryConfig.from_env(home=home, **overrides))


def resolve_tracking_uri(tracking_uri: Optional[str], home: Optional[Path] = None) -> str:
    """Explicit, else $MLFLOW_TRACKING_URI, else the running local stack."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _stack(home).tracking_uri()


def _print_status(status) -> None:
    table = Table(show_header=True, header_style="bold")
    table.add_column("service")
    table.add_column("state")
    table.add_column("address")
    s3_label = "S3 (external)" if status.s3_external else "S3 (weed mini)"
    table.add_row(s3_label, "up" if status.s3_running else "down", status.s3_endpoint_url or "-")
    table.add_row("MLflow", "up" if status.mlflow_running else "down", status.tracking_uri or "-")
    console.print(table)
    console.print(f"bucket: {status.bucket}   home: {status.home}")


@registry_app.command()
def up(
    home: Optional[Path] = HomeOption,
    bucket: Optional[str] = typer.Option(None, help="Artifact bucket (default $SPELLTRANSFER_S3_BUCKET or spelltransfer-artifacts)."),
    s3_port: Optional[int] = typer.Option(None, help="weed's S3 port (0 = free port, kept across ups)."),
    mlflow_port: Optional[int] = typer.Option(None, help="MLflow port (0 = free port, kept across ups)."),
    backend_store_uri: Optional[str] = typer.Option(None, help="sqlite:///… (default, in home) or postgresql://…"),
) -> None:
    """Start S3 (weed mini, unless SPELLTRANSFER_S3_ENDPOINT_URL) and the MLflow server; create the bucket."""
    stack = _stack(home, bucket=bucket, s3_port=s3_port, mlflow_port=mlflow_port, backend_store_uri=backend_store_uri)
    with console.status("starting S3 and MLflow…"):
        status = stack.up()
    _print_status(status)
    console.print(f'export MLFLOW_TRACKING_URI={status.tracking_uri}', highlight=False)


@registry_app.command()
def down(home: Optional[Path] = HomeOption) -> None:
    """Stop the MLflow server and S3; data (sqlite db, S3 objects) stays in the home folder."""
    stopped = _stack(home).down()
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@registry_app.command()
def status(
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show whether S3 and MLflow run and where; exit code 1 when either is down."""
    state = _stack(home).status()
    if as_json:
        print(json.dumps({
            "s3_endpoint_url": state.s3_endpoint_url, "s3_running": state.s3_running, "s3_external": state.s3_external,
            "tracking_uri": state.tracking_uri, "mlflow_running": state.mlflow_running, "bucket": state.bucket,
            "home": str(state.home),
        }))
    else:
        _print_status(state)
    raise typer.Exit(0 if state.healthy else 1)


@registry_app.command()
def serve(
    host: str = typer.Option("0.0.0.0", help="Interface MLflow listens on (inside a container: all)."),
    port: int = typer.Option(5000, help="MLflow port."),
    workers: int = typer.Option(2, min=1, help="uvicorn workers."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Foreground MLflow server for containers: wait for the external S3, create the bucket, run mlflow.

    Reads SPELLTRANSFER_S3_ENDPOINT_URL (MinIO), SPELLTRANSFER_S3_BUCKET, the S3 keys and
    SPELLTRANSFER_MLFLOW_BACKEND_STORE_URI (+ SPELLTRANSFER_MLFLOW_DB_PASSWORD_FILE for PostgreSQL).
    With SPELLTRANSFER_MLFLOW_ADMIN_PASSWORD_FILE every request needs a login (user admin); a
    non-loopback --host without it is refused. SIGTERM (docker stop) at any point stops mlflow
    and its workers and exits 0.
    """
    from spelltransfer.errors import ConfigError
    from spelltransfer.registry import mlflow_auth, mlflow_server, s3
    from spelltransfer.registry.credentials import load_credentials

    config = RegistryConfig.from_env(home=home)
    if not config.s3_endpoint_url:
        raise ConfigError("registry serve: set SPELLTRANSFER_S3_ENDPOINT_URL (e.g. http://minio:9000); "
                          "on a machine without Docker use `spelltransfer registry up`")
    auth_env = mlflow_auth.server_auth_env(host, config.home)

    def prepare():
        credentials = load_credentials()
        console.print(f"waiting for S3 at {config.s3_endpoint_url}")
        s3.wait_ready(config.s3_endpoint_url, credentials, config.startup_timeout_s)
        created = s3.ensure_bucket(config.s3_endpoint_url, credentials, config.bucket)
        console.print(f"bucket {config.bucket}: {'created' if created else 'exists'} at {config.s3_endpoint_url}")
        config.home.mkdir(parents=True, exist_ok=True)
        command = mlflow_server.mlflow_command(config.resolved_backend_store_uri, config.bucket, host, port, workers,
                                               basic_auth=auth_env is not None)
        return command, {**mlflow_server.mlflow_env(credentials, config.s3_endpoint_url), **(auth_env or {})}

    raise typer.Exit(mlflow_server.run_in_foreground(prepare))


@registry_app.command("env")
def env_command(home: Optional[Path] = HomeOption) -> None:
    """Print `export MLFLOW_TRACKING_URI=…` for the running stack (use with eval)."""
    print(f"export MLFLOW_TRACKING_URI={_stack(home).tracking_uri()}")


@registry_app.command("register")
def register_command(
    name: str = typer.Option(..., help="Registered model name, e.g. spelling-lora."),
    metric: str = typer.Option(..., help="Objective metric key, e.g. eval/spelling_accuracy."),
    sweep_run_id: Optional[str] = typer.Option(None, help="Sweep parent run: its best FINISHED child is registered."),
    run_id: Optional[str] = typer.Option(None, help="Register this run directly instead."),
    mode: str = typer.Option("max", help="max or min: which direction of the metric is better."),
    alias: str = typer.Option("champion", help="Alias to point at the new version."),
    adapter_path: str = typer.Option("adapter", help="Artifact folder of the run holding the PEFT adapter."),
    tracking_uri: Optional[str] = TrackingOption,
    home: Optional[Path] = HomeOption,
) -> None:
    """Register a sweep's best trial (or one run) as NAME@champion with its eval metrics as tags."""
    from spelltransfer.registry import model_registry
    from spelltransfer.registry.errors import RegistryError

    if bool(sweep_run_id) == bool(run_id):
        raise RegistryError("register: give exactly one of --sweep-run-id and --run-id")
    uri = resolve_tracking_uri(tracking_uri, home)
    if sweep_run_id:
        result = model_registry.register_best_trial(uri, sweep_run_id, name, metric=metric, mode=mode,
                                                    alias=alias, adapter_path=adapter_path)
    else:
        result = model_registry.register_run(uri, run_id, name, metric=metric, alias=alias, adapter_path=adapter_path)
    console.print(f"registered {result.name} version {result.version} (run {result.run_id}, "
                  f"{result.metric}={result.value:.4g}) as {result.name}@{alias}", highlight=False)


@registry_app.command()
def pull(
    ref: str = typer.Argument(..., help="NAME@ALIAS (e.g. spelling-lora@champion) or NAME/VERSION."),
    out: Path = typer.Option(..., "--out", help="Folder to write the adapter to."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out folder."),
    tracking_uri: Optional[str] = TrackingOption,
    home: Optional[Path] = HomeOption,
) -> None:
    """Download a registered adapter folder (loadable by `spelltransfer eval --adapter`)."""
    from spelltransfer.registry import model_registry

    path = model_registry.pull(resolve_tracking_uri(tracking_uri, home), ref, out, overwrite=overwrite)
    files = sorted(p.name for p in path.iterdir())
    console.print(f"{ref} → {path} ({', '.join(files)})", highlight=False)


outbox_app = typer.Typer(help="The local artifact outbox (uploads waiting for S3/MLflow).", no_args_is_help=True)
registry_app.add_typer(outbox_app, name="outbox")
OutboxDirOption = typer.Option(None, "--dir", help=f"Outbox folder (default ${OUTBOX_ENV} or <home>/outbox).")


def _outbox_dir(directory: Optional[Path], home: Optional[Path]) -> Path:
    if directory:
        return directory
    if os.environ.get(OUTBOX_ENV):
        return Path(os.environ[OUTBOX_ENV])
    return RegistryConfig.from_env(home=home).home / "outbox"


@outbox_app.command("status")
def outbox_status(directory: Optional[Path] = OutboxDirOption, home: Optional[Path] = HomeOption) -> None:
    """Pending entries, files and bytes, and the last errors."""
    from spelltransfer.registry.outbox import Outbox

    outbox = Outbox(_outbox_dir(directory, home), tracking_uri="file:unused", start=False)
    stats = outbox.stats()
    console.print(f"pending: {stats.pending_entries} entries, {stats.pending_files} files, "
                  f"{stats.pending_bytes} bytes; done: {stats.done_entries}")
    for error in stats.last_errors[:5]:
        console.print(f"  last error: {error}", highlight=False)


@outbox_app.command("drain")
def outbox_drain(
    directory: Optional[Path] = OutboxDirOption,
    timeout: float = typer.Option(300.0, help="Give up after this many seconds (entries stay queued)."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Upload and verify everything queued; exit code 1 if something is still pending at the timeout."""
    from spelltransfer.registry.outbox import Outbox

    outbox = Outbox(_outbox_dir(directory, home), tracking_uri="file:unused", start=False, max_delay_s=10.0)
    done = outbox.flush(timeout)
    stats = outbox.stats()
    console.print(f"{'all uploaded and verified' if done else 'still pending'}: {stats.pending_files} files left, "
                  f"{stats.done_entries} entries done")
    raise typer.Exit(0 if done else 1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(registry_app, name="registry")
