"""``python -m services.evaluator`` (= ``spelltransfer platform evaluator``): the evaluator in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from services.foreground import run_command, run_until_signalled


def evaluator(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(50071, help="Port; 0 = any free port."),
    work_dir: Optional[Path] = typer.Option(None, help="Where evaluation results are written (default: a temp dir)."),
    port_file: Optional[Path] = typer.Option(None, help="Write the bound port here."),
) -> None:
    """Evaluator: a base model + adapter on the task sets, streaming progress."""
    from services.evaluator.server import serve

    run_until_signalled(lambda: serve(host, port, str(work_dir) if work_dir else None), port_file)


if __name__ == "__main__":
    run_command(evaluator, "evaluator")
