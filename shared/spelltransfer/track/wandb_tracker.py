"""Weights & Biases, offline by default so it works with no network (sync later with `wandb sync`)."""

from __future__ import annotations

import os
from pathlib import Path

from spelltransfer.track.config import WandbConfig


class WandbTracker:
    name = "wandb"

    def __init__(self, config: WandbConfig, run_dir: Path):
        self.config = config
        self.mode = config.mode or os.environ.get("WANDB_MODE") or "offline"
        self.dir = Path(config.dir) if config.dir else run_dir
        self.run = None

    def start(self, run_name: str, params: dict, tags: dict, resume_id: str | None) -> str:
        import wandb

        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.config.project, name=run_name, group=self.config.group, config=params, dir=str(self.dir),
            mode=self.mode,
            id=resume_id, resume="allow" if resume_id else None, tags=[f"{k}:{v}"[:64] for k, v in tags.items()][:20],
            settings=wandb.Settings(silent=True, console="off"), reinit="create_new",
        )
        return self.run.id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list], step: int | None = None) -> None:
        """A ``wandb.Table`` (e.g. eval predictions), shown beside the run's charts."""
        import wandb

        self.run.log({key: wandb.Table(columns=list(columns), data=[list(row) for row in rows])}, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        import wandb

        path = Path(path)
        artifact = wandb.Artifact(name=(artifact_path or path.stem).replace("/", "-"), type="adapter" if path.is_dir() else "file")
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)
