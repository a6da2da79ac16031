"""Run one gRPC service in the foreground: what ``python -m services.{sweep,trainer,evaluator}`` share.

``spelltransfer platform controller|trainer|evaluator ARGS`` replaces itself with
``python -m services.{sweep,trainer,evaluator} ARGS`` (same process, options and exit code).
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
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

import typer

from spelltransfer.atomic import write_text_atomic
from spelltransfer.errors import SpellTransferError


def run_until_signalled(started: Callable[[], tuple], port_file: Optional[Path]) -> None:
    """``started()`` starts the service and returns ``(server, port, stop)``; ``stop()`` runs on SIGTERM/SIGINT."""
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


def run_command(command: Callable, name: str) -> None:
    """Run ``command`` as the typer command ``spelltransfer platform NAME``; a ``SpellTransferError``
    is a one-line red message and exit code 2, as in the package's CLI."""
    from rich.console import Console

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    try:
        app(prog_name=f"spelltransfer platform {name}")
    except SpellTransferError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False)
        sys.exit(2)
