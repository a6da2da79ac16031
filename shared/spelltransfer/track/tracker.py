"""One small interface for experiment trackers, and the composite the trainer talks to.

A ``RunTracker`` starts (or resumes) a run, logs params once, metrics by step, files as
artifacts, and finishes with a status. The trainer holds a ``CompositeTracker`` of the enabled
ones, so adding a backend (e.g. S3 artifact upload with an outbox) is one new class.
A tracker that fails while logging is disabled with a warning: tracking never kills training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

from spelltransfer.atomic import write_text_atomic
from spelltransfer.run_folder import RunFolder

log = logging.getLogger(__name__)


class RunTracker(Protocol):
    name: str

    def start(self, run_name: str, params: dict, tags: dict, resume_id: str | None) -> str:
        """Start or resume a run; return its id (stored so ``--resume`` continues the same run)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder."""

    def finish(self, status: str) -> None:
        """status: FINISHED, FAILED or KILLED."""


class CompositeTracker:
    """Fan out to every tracker; remember run ids in ``DIR/tracking.json`` for resume."""

    def __init__(self, trackers: list[RunTracker], ids_file: Path):
        self.trackers = list(trackers)
        self.ids_file = ids_file

    def _call(self, tracker: RunTracker, method: str, *args) -> object:
        try:
            return getattr(tracker, method)(*args)
        except Exception as error:  # noqa: BLE001 - a tracker outage must not stop training
            log.warning("%s tracker failed in %s (%s); disabling it for this run", tracker.name, method, error)
            self.trackers.remove(tracker)
            return None

    def start(self, run_name: str, params: dict, tags: dict) -> dict[str, str]:
        previous = json.loads(self.ids_file.read_text()) if self.ids_file.is_file() else {}
        ids = {}
        for tracker in list(self.trackers):
            run_id = self._call(tracker, "start", run_name, params, tags, previous.get(tracker.name))
            if run_id:
                ids[tracker.name] = run_id
        write_text_atomic(self.ids_file, json.dumps(ids), fsync=False)
        return ids

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for tracker in list(self.trackers):
            self._call(tracker, "log_metrics", metrics, step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        for tracker in list(self.trackers):
            self._call(tracker, "log_artifact", path, artifact_path)

    def finish(self, status: str) -> None:
        for tracker in list(self.trackers):
            self._call(tracker, "finish", status)


def build_tracker(config, experiment: str, run_dir: Path) -> CompositeTracker:
    """The trackers enabled in a ``TrackingConfig``."""
    trackers: list[RunTracker] = []
    if config.mlflow.enabled:
        from spelltransfer.track.mlflow_tracker import MlflowTracker

        trackers.append(MlflowTracker(config.mlflow, experiment))
    if config.wandb.enabled:
        from spelltransfer.track.wandb_tracker import WandbTracker

        trackers.append(WandbTracker(config.wandb, run_dir))
    return CompositeTracker(trackers, RunFolder(run_dir).tracking)
