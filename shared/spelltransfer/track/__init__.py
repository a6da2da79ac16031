"""Experiment tracking (MLflow, W&B) behind one small ``RunTracker`` interface."""

from spelltransfer.track.config import MlflowConfig, TrackingConfig, WandbConfig
from spelltransfer.track.tracker import CompositeTracker, RunTracker, build_tracker

__all__ = ["CompositeTracker", "MlflowConfig", "RunTracker", "TrackingConfig", "WandbConfig", "build_tracker"]
