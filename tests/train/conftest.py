"""Training fixtures: a small dataset folder written from the real task generators, and a
config factory that points at the tiny model with tracking off."""

from __future__ import annotations

import pytest

TRAIN_WORDS = ["garden", "apple", "river", "stone", "planet", "window", "candle", "forest", "butter", "yellow",
               "dragon", "silver", "orange", "pencil", "rocket", "guitar"]
VALIDATION_WORDS = ["jacket", "winter", "summer", "castle", "bottle", "marble"]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    from spelltransfer.data import make_examples, write_jsonl

    out = tmp_path_factory.mktemp("tiny-data")
    write_jsonl(out / "train.jsonl", make_examples("spelling", TRAIN_WORDS, 64, seed=0, split="train"))
    validation = []
    for task in ("spelling", "position", "count"):
        validation += make_examples(task, VALIDATION_WORDS, 8, seed=1, split="validation")
    write_jsonl(out / "validation.jsonl", validation)
    write_jsonl(out / "test.jsonl", make_examples("spelling", VALIDATION_WORDS, 6, seed=2, split="test"))
    return out


@pytest.fixture
def tiny_config(tiny_model_path, tiny_data_dir, tmp_path, repo_root):
    """``tiny_config(**overrides)`` -> RunConfig on the tiny model, a few short steps, no trackers."""
    from spelltransfer.train import load_training_config

    def make(*extra: str):
        base = [
            f"model.name={tiny_model_path}", f"training.data_dir={tiny_data_dir}",
            "model.max_seq_length=40", "training.batch_size=2", "training.max_steps=4", "training.eval_steps=2",
            "training.save_steps=2", "training.eval_samples=4", "training.precision=fp32", "training.num_threads=1",
            "training.tracking.mlflow.enabled=false", "training.tracking.wandb.enabled=false",
            f"training.plot_dir={tmp_path / 'plots'}", "scheduler.warmup_steps=1",
        ]
        return load_training_config(repo_root / "configs/training/config.yaml", base + list(extra))

    return make
