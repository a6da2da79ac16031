"""``python -m services.trainer`` (= ``spelltransfer platform trainer``): a trainer worker in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from services.foreground import run_command, run_until_signalled


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

    run_until_signalled(lambda: serve(str(work_dir), host, port, slots, controller, advertise, pack_size=pack_size,
                                      pack_wait_s=pack_wait_s), port_file)


if __name__ == "__main__":
    run_command(trainer, "trainer")
