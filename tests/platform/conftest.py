"""Fixtures for the platform tests: a token in the environment, a tiny dataset and trial config.

Trials train the 2-layer ``tiny_model_path`` model for a handful of steps on a small real dataset,
so a whole trial (process start, model load, steps, checkpoints) takes seconds, not minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service_env import api_token, evaluator, service_roots  # noqa: F401  (fixtures)

SMALL_DATA = dict(train_words=60, eval_words=60, train_size=60, validation_per_task=6, test_per_task=6)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_model_path) -> str:
    from transformers import AutoTokenizer

    from spelltransfer.data import build_dataset

    out = tmp_path_factory.mktemp("platform-data") / "tiny"
    build_dataset(out, tokenizer=AutoTokenizer.from_pretrained(tiny_model_path), seed=0, **SMALL_DATA)
    return str(out)


@pytest.fixture
def make_overrides(tiny_model_path, tiny_dataset, tmp_path):
    """``make_overrides(max_steps, save_steps)``: --set list for a few-step run of the tiny model."""

    def make(max_steps: int = 6, save_steps: int = 2) -> list[str]:
        return _trial_overrides(tiny_model_path, tiny_dataset, max_steps, save_steps) + [
            f"training.plot_dir={tmp_path / 'plots'}"]

    return make


def _trial_overrides(tiny_model_path: str, tiny_dataset: str, max_steps: int = 6, save_steps: int = 2) -> list[str]:
    """A few-step run of the tiny model: checkpoints every ``save_steps``; no trackers."""
    return [
        f"model.name={tiny_model_path}", f"training.data_dir={tiny_dataset}", f"training.max_steps={max_steps}",
        f"training.save_steps={save_steps}", f"training.eval_steps={save_steps}", "training.batch_size=2",
        "training.eval_samples=4", "training.eval_batch_size=16", "training.num_threads=1",
        "transfer.eval_items_per_task=3",
        "training.tracking.mlflow.enabled=false", "training.tracking.wandb.enabled=false",
        "training.early_stopping.enabled=false", "training.precision=fp32",
    ]


@pytest.fixture
def base_config(repo_root) -> str:
    return str(Path(repo_root) / "configs" / "training" / "config.yaml")
