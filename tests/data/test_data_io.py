"""Loading: malformed lines name file and line, empty/missing files are clear errors."""

from __future__ import annotations

import json

import pytest

from spelltransfer.data import Example, load_examples, load_external, load_split, write_jsonl
from spelltransfer.errors import DataError

GOOD = Example(task="count", word="strawberry", prompt="How many r's are in the word strawberry?", answer="3",
               template_id="count/1", split="test")


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_round_trip(tmp_path):
    path = tmp_path / "test.jsonl"
    assert write_jsonl(path, [GOOD, GOOD]) == 2
    assert load_examples(path) == [GOOD, GOOD]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("bad_line, message", [
    ('{"task": "count", "word": "x"', "invalid JSON"),
    ('["not", "an", "object"]', "expected a JSON object"),
    (json.dumps({k: v for k, v in GOOD.to_dict().items() if k != "answer"}), "missing field.*answer"),
    (json.dumps({**GOOD.to_dict(), "extra": 1}), "unknown field.*extra"),
    (json.dumps({**GOOD.to_dict(), "task": "rhyming"}), "field 'task'"),
    (json.dumps({**GOOD.to_dict(), "split": "dev"}), "field 'split'"),
    (json.dumps({**GOOD.to_dict(), "answer": 3}), "field 'answer' must be a non-empty string"),
    (json.dumps({**GOOD.to_dict(), "answer": "three"}), "not a well-formed count answer"),
    (json.dumps({**GOOD.to_dict(), "prompt": "  "}), "field 'prompt'"),
    (json.dumps({**GOOD.to_dict(), "template_id": "spelling/1"}), "template_id"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = _write(tmp_path / "test.jsonl", [json.dumps(GOOD.to_dict()), "", json.dumps(GOOD.to_dict()), bad_line])
    with pytest.raises(DataError, match=message) as caught:
        load_examples(path)
    assert f"{path}:4:" in str(caught.value)


def test_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_examples(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="empty"):
        load_examples(_write(tmp_path / "empty.jsonl", ["", "   "]))
    with pytest.raises(DataError, match="dataset folder not found"):
        load_split(tmp_path / "missing", "test")
    with pytest.raises(DataError, match="split 'dev' unknown"):
        load_split(tmp_path, "dev")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="UTF-8"):
        load_examples(tmp_path / "bin.jsonl")


def test_external_jsonl(tmp_path):
    path = _write(tmp_path / "ext.jsonl", [
        json.dumps({"prompt": "Spell cat.", "answer": "c-a-t", "task": "spelling"}),
        json.dumps({"prompt": "How many a's in banana?", "answer": " 3 "}),
    ])
    examples = load_external(path, task="count")
    assert [(e.task, e.answer, e.split, e.template_id) for e in examples] == [
        ("spelling", "c-a-t", "external", "external"), ("count", "3", "external", "external")]
    with pytest.raises(DataError, match=r"ext.jsonl:2: field 'task'"):
        load_external(path)


def test_external_tsv(tmp_path):
    path = _write(tmp_path / "ext.tsv", ["input1\tlabel", "What is the 2nd letter of cat?\ta", "Last letter of dog?\tg"])
    examples = load_external(path, task="position")
    assert [(e.prompt, e.answer, e.task) for e in examples] == [
        ("What is the 2nd letter of cat?", "a", "position"), ("Last letter of dog?", "g", "position")]
    with pytest.raises(DataError, match="pass the task"):
        load_external(path)
    with pytest.raises(DataError, match="unknown"):
        load_external(path, task="rhyming")
    bad = _write(tmp_path / "bad.tsv", ["q1\ta", "q2 without label", "q3\tc"])
    with pytest.raises(DataError, match=r"bad.tsv:2: expected 2 tab-separated columns"):
        load_external(bad, task="position")
    blank_label = _write(tmp_path / "blank.tsv", ["q1\ta", "q2\t "])
    with pytest.raises(DataError, match=r"blank.tsv:2: field 'answer'"):
        load_external(blank_label, task="position")
    with pytest.raises(DataError, match="only a header"):
        load_external(_write(tmp_path / "header.tsv", ["input1\tlabel"]), task="count")
    with pytest.raises(DataError, match="unsupported file type"):
        load_external(_write(tmp_path / "x.csv", ["a,b"]), task="count")
