"""MLflow: params, metrics by step, artifacts. Local sqlite store by default, any URI by config/env."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spelltransfer.track.config import DEFAULT_MLFLOW_URI, MlflowConfig

MAX_PARAM_LENGTH = 500


def resolve_tracking_uri(config: MlflowConfig) -> str:
    """Config, else $MLFLOW_TRACKING_URI, else a sqlite file under results/mlflow/ (created)."""
    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///")).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    elif uri.startswith("file:"):
        Path(uri.removeprefix("file:").removeprefix("//")).mkdir(parents=True, exist_ok=True)
    return uri


class MlflowTracker:
    name = "mlflow"

    def __init__(self, config: MlflowConfig, experiment: str):
        from mlflow import MlflowClient

        self.config = config
        self.uri = resolve_tracking_uri(config)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = config.experiment or experiment
        self.run_id: str | None = None

    def start(self, run_name: str, params: dict, tags: dict, resume_id: str | None) -> str:
        if resume_id:
            self.client.update_run(resume_id, status="RUNNING")
            self.run_id = resume_id
            return resume_id
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        run = self.client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        batch = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()]
        for start in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[start:start + 100])
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        outbox = self._outbox()
        if outbox is not None:
            # Copied now; uploaded, verified and cleaned in the background (survives S3/MLflow outages).
            outbox.submit(path, self.run_id, artifact_path or (path.name if path.is_dir() else None))
            return
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path or path.name)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def _outbox(self):
        """The registry's shared outbox for remote tracking servers (None for local stores)."""
        from spelltransfer.registry.outbox import outbox_for

        return outbox_for(self.uri)

    def finish(self, status: str) -> None:
        outbox = self._outbox()
        if outbox is not None:
            from spelltransfer.registry.outbox import flush_timeout_s

            if not outbox.flush(flush_timeout_s(), run_id=self.run_id):
                logging.getLogger(__name__).warning(
                    "run %s: artifacts still queued in %s; they upload later (`spelltransfer registry outbox drain`)",
                    self.run_id, outbox.root)
        self.client.set_terminated(self.run_id, status=status)
