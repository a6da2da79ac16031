"""Fixtures for the data tests: the real SmolLM2 tokenizer and one small dataset built once."""

from __future__ import annotations

import pytest

# Small but real: every word rule and file of a full build, in a few seconds.
SMALL = dict(train_words=300, eval_words=400, train_size=300, validation_per_task=30, test_per_task=40)


@pytest.fixture(scope="session")
def tokenizer():
    from spelltransfer.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, tokenizer):
    """(folder, manifest) of a small build with seed 0."""
    from spelltransfer.data import build_dataset

    out = tmp_path_factory.mktemp("data") / "small"
    return out, build_dataset(out, tokenizer=tokenizer, seed=0, **SMALL)
