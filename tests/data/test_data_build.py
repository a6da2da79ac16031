"""build_dataset: files, manifest, determinism, word-disjoint splits, atomic replacement."""

from __future__ import annotations

import json

import pytest

from conftest import SMALL
from spelltransfer.data import build_dataset, content_hash, load_manifest, load_split, load_words, make_examples
from spelltransfer.errors import ConfigError, DataError


def test_files_and_manifest(small_dataset):
    out, manifest = small_dataset
    assert sorted(p.name for p in out.iterdir()) == ["hf", "manifest.json", "test.jsonl", "train.jsonl",
                                                       "validation.jsonl", "words.json"]
    assert manifest == load_manifest(out)
    assert manifest["counts"] == {"train": {"spelling": 300},
                                  "validation": {"spelling": 30, "position": 30, "count": 30},
                                  "test": {"spelling": 40, "position": 40, "count": 40}}
    assert manifest["seed"] == 0 and manifest["model"] == "smollm2-135m"
    assert manifest["words"]["train"] == 300 and manifest["words"]["validation"] + manifest["words"]["test"] == 400
    assert manifest["content_sha256"] == content_hash(out)
    for split, total in manifest["totals"].items():
        examples = load_split(out, split)
        assert len(examples) == total == manifest["files"][f"{split}.jsonl"]["lines"]
        assert {e.split for e in examples} == {split}
    assert not list(out.parent.glob(".small.build-*"))  # no staging left behind


def test_splits_are_word_disjoint_and_match_words_json(small_dataset, tokenizer):
    out, _ = small_dataset
    words = load_words(out)
    by_split = {split: {e.word for e in load_split(out, split)} for split in ("train", "validation", "test")}
    assert by_split["train"] <= set(words.train)
    assert by_split["validation"] <= set(words.validation) and by_split["test"] <= set(words.test)
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["validation"] & by_split["test"]
    # train_source "both" (the default): half single-token words, half multi-token dictionary words
    lengths = [len(tokenizer.tokenize(" " + w)) for w in words.train]
    assert sum(n == 1 for n in lengths) == len(words.train) // 2 and sum(n >= 2 for n in lengths) == len(words.train) - len(words.train) // 2
    assert all(len(tokenizer.tokenize(" " + w)) >= 2 for w in by_split["validation"] | by_split["test"])


def test_eval_splits_interleave_tasks(small_dataset):
    out, _ = small_dataset
    first = [e.task for e in load_split(out, "test")[:6]]
    assert first == ["spelling", "position", "count"] * 2  # so --limit N stays balanced


def test_hf_copy_matches_jsonl(small_dataset):
    from datasets import load_from_disk

    out, _ = small_dataset
    hf = load_from_disk(str(out / "hf"))
    assert set(hf) == {"train", "validation", "test"}
    assert hf["test"][0] == load_split(out, "test")[0].to_dict()
    assert hf["train"].num_rows == 300


def test_same_seed_same_hash_other_seed_differs(tmp_path, tokenizer, small_dataset):
    _, manifest = small_dataset
    again = build_dataset(tmp_path / "again", tokenizer=tokenizer, seed=0, **SMALL)
    other = build_dataset(tmp_path / "other", tokenizer=tokenizer, seed=1, **SMALL)
    assert again["content_sha256"] == manifest["content_sha256"]
    assert (tmp_path / "again" / "test.jsonl").read_bytes() == (small_dataset[0] / "test.jsonl").read_bytes()
    assert other["content_sha256"] != manifest["content_sha256"]


def test_rebuild_replaces_and_failure_leaves_old_folder_intact(tmp_path, tokenizer):
    out = tmp_path / "ds"
    first = build_dataset(out, tokenizer=tokenizer, seed=0, **SMALL)
    (out / "notes.txt").write_text("mine")  # files we don't own survive a rebuild
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def fail_while_writing(stage, done, total):
        if stage == "write" and done == 1:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_dataset(out, tokenizer=tokenizer, seed=1, progress=fail_while_writing, **SMALL)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.build-")]

    second = build_dataset(out, tokenizer=tokenizer, seed=1, **SMALL)
    assert second["content_sha256"] != first["content_sha256"]
    assert load_manifest(out)["seed"] == 1 and content_hash(out) == second["content_sha256"]
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_bad_config_and_targets(tmp_path, tokenizer):
    with pytest.raises(ConfigError, match="test_per_task"):
        build_dataset(tmp_path / "x", tokenizer=tokenizer, test_per_task=0)
    with pytest.raises(ConfigError, match="unknown_knob|Extra inputs"):
        build_dataset(tmp_path / "x", tokenizer=tokenizer, unknown_knob=1)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="not a folder"):
        build_dataset(tmp_path / "file", tokenizer=tokenizer, **SMALL)
    assert not (tmp_path / "x").exists()
    with pytest.raises(DataError, match="manifest.json: not found"):
        load_manifest(tmp_path)


def test_make_examples_on_training_words_for_the_trainer(small_dataset):
    out, manifest = small_dataset
    train_words = load_words(out).train
    mixed = make_examples("position", train_words, 100, seed=manifest["seed"]) + \
        make_examples("count", train_words, 100, seed=manifest["seed"])
    assert {e.word for e in mixed} <= set(train_words)
    assert {e.task for e in mixed} == {"position", "count"} and {e.split for e in mixed} == {"train"}
    assert mixed == make_examples("position", train_words, 100, seed=0) + make_examples("count", train_words, 100, seed=0)
    assert json.loads(json.dumps(mixed[0].to_dict())) == mixed[0].to_dict()
