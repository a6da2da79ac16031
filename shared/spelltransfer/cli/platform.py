"""`spelltransfer platform controller|trainer|evaluator`: start one gRPC service in the foreground.

The services live in ``services/`` and import this package, never the reverse: each command here
replaces the process with ``python -m services.{sweep,trainer,evaluator} ARGS`` (same pid, so
signals and the exit code are the service's). Options, tokens, TLS and roots: ``--help`` of each
command, and ``services/foreground.py``.
"""

from __future__ import annotations

import os
import sys

import typer

platform_app = typer.Typer(help="Run the platform's gRPC services (controller, trainer worker, evaluator).",
                           no_args_is_help=True)

# command -> (service module, one line of help)
SERVICES = {
    "controller": ("services.sweep", "Sweep controller: Optuna studies dispatched to trainer workers."),
    "trainer": ("services.trainer", "Trainer worker: runs `spelltransfer train` trials (packed with --pack-size > 1), "
                                    "resumes them after a restart."),
    "evaluator": ("services.evaluator", "Evaluator: a base model + adapter on the task sets, streaming progress."),
}
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def service_command(name: str, args: list[str]) -> list[str]:
    """The command line that runs service ``name`` with ``args``."""
    return [sys.executable, "-m", SERVICES[name][0], *args]


def _add(name: str, help_text: str) -> None:
    def command(ctx: typer.Context) -> None:
        argv = service_command(name, list(ctx.args))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)

    platform_app.command(name, help=help_text, context_settings=_PASS_THROUGH, add_help_option=False)(command)


for _name, (_, _help) in SERVICES.items():
    _add(_name, _help)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(platform_app, name="platform")
