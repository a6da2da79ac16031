"""`spelltransfer platform controller|trainer|evaluator`: start one gRPC service in the foreground.

Every service needs ``SPELLTRANSFER_API_TOKEN`` (clients send it as a bearer token) and uses TLS
when ``SPELLTRANSFER_TLS_CERT``/``SPELLTRANSFER_TLS_KEY`` are set. ``--port 0`` takes a free port;
``--port-file`` writes the bound port (for scripts and tests). SIGTERM/SIGINT stop the service;
a trainer worker's running trials are stopped too and resume from their checkpoints next start.
Paths a request names must lie under the service's roots,
``SPELLTRANSFER_{CONFIGS,DATA,RESULTS,STORAGE}_ROOTS`` (``spelltransfer.platform.roots``;
defaults relative to the working directory: configs/, data/ results/ checkpoints/ models/,
results/ checkpoints/, results/), plus the service's own work or state folder.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from spelltransfer.atomic import write_text_atomic

platform_app = typer.Typer(help="Run the platform's gRPC services (controller, trainer worker, evaluator).",
                           no_args_is_help=True)


def _run_until_signalled(started, port_file: Optional[Path]) -> None:
    logging.basicConfig(level=os.environ.get("SPELLTRANSFER_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _, port, stop = started()
    if port_file is not None:
        write_text_atomic(port_file, f"{port}\n", fsync=False)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    typer.echo(f"listening on port {port}", err=True)
    done.wait()
    stop()


@platform_app.command("controller")
def controller(
    state_dir: Path = typer.Option(Path("results/sweeps/controller"), help="Controller state (SQLite) and default Optuna storage."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(50051, help="Port; 0 = any free port."),
    worker: list[str] = typer.Option([], help="A trainer worker HOST:PORT (repeatable); workers may also register themselves."),
    slots: int = typer.Option(1, min=1, help="Slots assumed for --worker addresses."),
    port_file: Optional[Path] = typer.Option(None, help="Write the bound port here."),
) -> None:
    """Sweep controller: Optuna studies dispatched to trainer workers."""
    from services.sweep.server import serve

    _run_until_signalled(lambda: serve(str(state_dir), host, port, workers=worker, default_slots=slots), port_file)


@platform_app.command("trainer")
def trainer(
    work_dir: Path = typer.Option(Path("checkpoints/worker"), help="Run folders and the worker's state file."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(50061, help="Port; 0 = any free port."),
    slots: int = typer.Option(1, min=1, help="Trials this worker runs at once."),
    pack_size: int = typer.Option(1, min=1, help="Train up to this many of those trials as one packed process "
                                  "(one base model, one LoRA per trial); 1 = each trial its own process. Only "
                                  "trials whose configs differ in seed, LoRA r/alpha, lr, weight decay, clipping, "
                                  "batch size, grad accumulation, max steps (and logging/eval settings) share a pack."),
    pack_wait_s: float = typer.Option(2.0, min=0.0, help="How long a pending trial waits for others to fill its pack."),
    controller: Optional[str] = typer.Option(None, help="Register with this controller (HOST:PORT)."),
    advertise: Optional[str] = typer.Option(None, help="Address the controller should use (default HOST:PORT)."),
    port_file: Optional[Path] = typer.Option(None, help="Write the bound port here."),
) -> None:
    """Trainer worker: runs `spelltransfer train` trials (packed with --pack-size > 1), resumes them after a restart."""
    from services.trainer.server import serve

    _run_until_signalled(lambda: serve(str(work_dir), host, port, slots, controller, advertise, pack_size=pack_size,
                                       pack_wait_s=pack_wait_s), port_file)


@platform_app.command("evaluator")
def evaluator(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(50071, help="Port; 0 = any free port."),
    work_dir: Optional[Path] = typer.Option(None, help="Where evaluation results are written (default: a temp dir)."),
    port_file: Optional[Path] = typer.Option(None, help="Write the bound port here."),
) -> None:
    """Evaluator: a base model + adapter on the task sets, streaming progress."""
    from services.evaluator.server import serve

    _run_until_signalled(lambda: serve(host, port, str(work_dir) if work_dir else None), port_file)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(platform_app, name="platform")
