"""`spelltransfer sweep submit|status|watch|cancel|list|workers|local|chunk`: talk to the sweep controller.

The controller address comes from ``--controller`` or ``$SPELLTRANSFER_CONTROLLER`` (default
127.0.0.1:50051) and the bearer token from ``$SPELLTRANSFER_API_TOKEN``. ``sweep local`` needs
neither: it starts a controller and workers on 127.0.0.1, runs the sweep and stops them. ``sweep
chunk`` does the same for one time-boxed chunk of a sweep whose state lives in a folder
(spelltransfer.sweep.chunk), so a study advances across machines.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

sweep_app = typer.Typer(help="Hyperparameter sweeps on the trainer workers (Optuna).", no_args_is_help=True)
# The trial table has ~12 columns: below 150 characters (or when piped, where rich assumes 80) it truncates.
console = Console(width=max(shutil.get_terminal_size((150, 24)).columns, 150))

ControllerOption = typer.Option(None, "--controller", help="Controller HOST:PORT (default $SPELLTRANSFER_CONTROLLER).")


def _client(controller: Optional[str]):
    from spelltransfer.sweep.client import SweepClient

    return SweepClient(controller)


@sweep_app.command("submit")
def submit(spec: Path = typer.Argument(..., help="Sweep spec YAML (configs/sweeps/*.yaml)."),
           controller: Optional[str] = ControllerOption,
           watch: bool = typer.Option(False, "--watch", help="Follow the sweep until it ends.")) -> None:
    """Validate and start a sweep (INVALID_ARGUMENT names the bad field; nothing starts)."""
    client = _client(controller)
    sweep = client.submit_file(spec)
    console.print(f"submitted sweep [bold]{sweep.name}[/] ({sweep.max_trials} trials)")
    if watch:
        _watch(client, sweep.name)


@sweep_app.command("status")
def status(name: str = typer.Argument(..., help="Sweep name."), controller: Optional[str] = ControllerOption) -> None:
    """The sweep's trial table."""
    from spelltransfer.sweep.client import trials_table

    console.print(trials_table(_client(controller).get(name)))


def _watch(client, name: str) -> None:
    from spelltransfer.platform.protos import sweep_pb2
    from spelltransfer.sweep.client import trials_table

    last = None
    for event in client.watch(name):
        last = event.sweep
        if event.kind != "snapshot":
            number = f" #{event.trial_number}" if event.trial_number >= 0 else ""
            console.print(f"[dim]{event.kind}{number}[/] {event.message}", highlight=False)
    if last is not None:
        console.print(trials_table(last))
        if last.state != sweep_pb2.SWEEP_COMPLETED:
            raise typer.Exit(1)


@sweep_app.command("watch")
def watch(name: str = typer.Argument(..., help="Sweep name."), controller: Optional[str] = ControllerOption) -> None:
    """Stream the sweep's events until it ends, then print its table."""
    _watch(_client(controller), name)


@sweep_app.command("cancel")
def cancel(name: str = typer.Argument(..., help="Sweep name."), controller: Optional[str] = ControllerOption) -> None:
    """Stop a sweep: queued trials are dropped, running ones cancelled on their workers."""
    from spelltransfer.sweep.client import trials_table

    console.print(trials_table(_client(controller).cancel(name)))


@sweep_app.command("list")
def list_sweeps(controller: Optional[str] = ControllerOption) -> None:
    """All sweeps the controller knows."""
    from spelltransfer.platform.protos import sweep_pb2

    for sweep in _client(controller).list():
        done = sum(t.state in ("COMPLETE", "PRUNED", "FAIL") for t in sweep.trials)
        best = f"best #{sweep.best_number} = {sweep.best_value:.4f}" if sweep.best_number >= 0 else "no result yet"
        console.print(f"{sweep.name}\t{sweep_pb2.SweepState.Name(sweep.state).removeprefix('SWEEP_')}\t"
                      f"{done}/{sweep.max_trials} trials\t{best}", highlight=False)


@sweep_app.command("workers")
def workers(controller: Optional[str] = ControllerOption) -> None:
    """Trainer workers known to the controller, with slots and busy counts."""
    for worker in _client(controller).workers():
        console.print(f"{worker.address}\tslots={worker.slots}\tbusy={worker.busy}\t"
                      f"{'reachable' if worker.reachable else 'unreachable'}", highlight=False)


@sweep_app.command("local")
def local(spec: Path = typer.Argument(..., help="Sweep spec YAML."),
          workers: int = typer.Option(2, min=1, help="Trainer worker processes."),
          slots: int = typer.Option(1, min=1, help="Trials per worker at once."),
          pack_size: int = typer.Option(1, min=1, help="Train up to this many of a worker's trials as one packed process on one base model (docs/platform.md)."),
          work_dir: Optional[Path] = typer.Option(None, help="Where state, runs and logs go (default: a temp dir)."),
          overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="Extra training override for every trial (repeatable), e.g. training.data_dir=DIR.")) -> None:
    """Start a controller and workers on 127.0.0.1, run the sweep, print its table, stop them."""
    from spelltransfer.sweep.local import run_local_sweep

    final = run_local_sweep(spec, n_workers=workers, slots=slots, work_dir=work_dir, overrides=overrides or [],
                            pack_size=pack_size, console=console)
    if any(t.state != "COMPLETE" for t in final.trials):
        raise typer.Exit(1)


@sweep_app.command("chunk")
def chunk(spec: Path = typer.Argument(..., help="Sweep spec YAML (configs/sweeps/study.yaml)."),
          state: Path = typer.Option(..., "--state", help="The study's state folder (optuna.db, trials.csv, curves/): read, then written back."),
          budget_s: float = typer.Option(..., "--budget-s", min=1, help="Wall-clock seconds this chunk may take, start and write-back included."),
          workers: int = typer.Option(1, min=1, help="Trainer worker processes."),
          slots: int = typer.Option(1, min=1, help="Trials per worker at once."),
          pack_size: int = typer.Option(1, min=1, help="Train up to this many of a worker's trials as one packed process (docs/platform.md)."),
          work_dir: Optional[Path] = typer.Option(None, help="Live controller/worker state; kept for a warm next chunk (default $TMPDIR/spelltransfer-chunk-NAME)."),
          target: Optional[int] = typer.Option(None, min=1, help="COMPLETE trials the study needs (default the spec's max_trials)."),
          max_cuts: int = typer.Option(2, min=0, help="Times a trial cut at a chunk's end is re-enqueued before it is left FAIL."),
          margin_s: float = typer.Option(30.0, min=0, help="Stop the platform this long before the budget ends."),
          stop_after: Optional[int] = typer.Option(None, min=1, help="End the chunk once this many more trials are COMPLETE."),
          no_tracking: bool = typer.Option(False, "--no-tracking", help="MLflow, W&B and the registry off, in the spec and every trial (a machine without them)."),
          overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="Extra training override for every trial (repeatable), e.g. training.data_dir=DIR.")) -> None:
    """Advance a resumable sweep by one chunk: continue from STATE, train until the budget, write STATE back.

    Trials in flight at the end are told FAIL (chunk_cut) and enqueued again with the same params.
    Exit 0 when the chunk ran (see STATE/chunks.jsonl), 3 when the study has its target COMPLETE.
    """
    from spelltransfer.sweep.chunk import run_chunk

    result = run_chunk(spec, state, budget_s, work_dir=work_dir, n_workers=workers, slots=slots, pack_size=pack_size,
                       overrides=overrides or [], target=target, max_cuts=max_cuts, margin_s=margin_s,
                       stop_after=stop_after, no_tracking=no_tracking, console=console)
    if result.done:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(sweep_app, name="sweep")
