"""The ``spelltransfer`` command line: one typer app, one module per command group.

Each module in ``COMMAND_MODULES`` exposes ``register(app)``; errors of type
``SpellTransferError`` become a one-line red message and exit code 2 (no traceback).
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from spelltransfer.errors import SpellTransferError

COMMAND_MODULES = ["data", "evaluate", "train", "analyse", "sweep", "platform", "registry", "serve", "demo"]

app = typer.Typer(
    name="spelltransfer",
    help="Fine-tune a small LM on spelling and measure transfer to letter position and counting.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

for _name in COMMAND_MODULES:
    importlib.import_module(f"spelltransfer.cli.{_name}").register(app)


def main() -> None:
    from spelltransfer.registry.mlflow_auth import apply_client_password_file

    try:
        apply_client_password_file()  # before any command talks to MLflow
        app()
    except SpellTransferError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False)
        sys.exit(2)
