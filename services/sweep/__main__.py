"""``python -m services.sweep`` (= ``spelltransfer platform controller``): the sweep controller in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from services.foreground import run_command, run_until_signalled


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

    run_until_signalled(lambda: serve(str(state_dir), host, port, workers=worker, default_slots=slots), port_file)


if __name__ == "__main__":
    run_command(controller, "controller")
