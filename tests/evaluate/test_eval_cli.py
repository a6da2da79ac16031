"""`spelltransfer eval` end to end on the tiny model, bad input, and one real bundled-model run."""

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from spelltransfer.cli import app
from spelltransfer.errors import ConfigError, DataError, ModelNotFoundError
from spelltransfer.evaluate.evaluator import predictions_path

runner = CliRunner()


def _eval(*args):
    return runner.invoke(app, ["eval", "--no-progress", *map(str, args)], terminal_width=200)


def test_eval_dataset_split_with_limit_and_tasks(tiny_model_path, dataset_dir, tmp_path):
    out = tmp_path / "out" / "tiny.json"
    result = _eval("--model", tiny_model_path, "--data", dataset_dir, "--split", "test", "--limit", 2,
                   "--tasks", "count,position", "--batch-size", 3, "--out", out)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert set(saved["tasks"]) == {"position", "count"} and saved["n_items"] == 4
    assert saved["tasks"]["count"]["n"] == 2 and saved["split"] == "test" and saved["batch_size"] == 3
    assert len(predictions_path(out).read_text().splitlines()) == 4
    assert "items/s" in result.output


def test_eval_external_tsv(tiny_model_path, tmp_path):
    tsv = tmp_path / "extra.tsv"
    tsv.write_text("input1\tlabel\nHow many r's are in strawberry?\t3\nHow many a's are in banana?\t3\n")
    out = tmp_path / "extra.json"
    result = _eval("--model", tiny_model_path, "--dataset", tsv, "--task", "count", "--out", out)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["split"] == "external" and saved["tasks"]["count"]["n"] == 2
    assert saved["tasks"]["count"]["trivial_baseline"] == 1.0  # both golds are "3"


@pytest.mark.parametrize(
    ("make_args", "error", "message"),
    [
        (lambda d, t: ["--data", d, "--limit", 0], ConfigError, "--limit must be >= 1"),
        (lambda d, t: ["--data", t / "nowhere"], DataError, "dataset folder not found"),
        (lambda d, t: ["--data", d, "--split", "validation"], DataError, "validation.jsonl: file not found"),
        (lambda d, t: ["--data", d, "--tasks", "count,rhyme"], ConfigError, "rhyme"),
        (lambda d, t: ["--data", d, "--dataset", t / "x.jsonl"], ConfigError, "exactly one of"),
        (lambda d, t: ["--data", d, "--model", "/no/such/model"], ModelNotFoundError, "/no/such/model"),
        (lambda d, t: ["--dataset", t / "bad.jsonl"], DataError, r"bad\.jsonl:2: invalid JSON"),
        (lambda d, t: ["--dataset", t / "empty.jsonl"], DataError, "empty"),
        (lambda d, t: ["--dataset", t / "bad.tsv"], DataError, "pass the task"),
    ],
)
def test_bad_input_raises_named_error_and_writes_nothing(dataset_dir, tmp_path, make_args, error, message):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "How many r in rr?", "answer": "2", "task": "count"}\n{"prompt": oops}\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "bad.tsv").write_text("a\tb\n")
    out = tmp_path / "r.json"
    result = _eval(*make_args(dataset_dir, tmp_path), "--out", out)
    assert isinstance(result.exception, error), result.output
    assert re.search(message, str(result.exception)), str(result.exception)
    assert not out.exists() and not predictions_path(out).exists()


def test_empty_selection_fails_before_loading_a_model(dataset_dir, tmp_path):
    lines = [line for line in (dataset_dir / "test.jsonl").read_text().splitlines() if '"task": "count"' in line]
    (dataset_dir / "test.jsonl").write_text("\n".join(lines) + "\n")
    result = _eval("--model", "/no/such/model", "--data", dataset_dir, "--tasks", "spelling", "--out", tmp_path / "r.json")
    assert isinstance(result.exception, DataError) and "no examples for tasks spelling" in str(result.exception)


def test_exit_code_and_message_from_the_real_entry_point(dataset_dir, tmp_path):
    out = tmp_path / "r.json"
    completed = subprocess.run(
        [sys.executable, "-c", "from spelltransfer.cli import main; main()", "eval", "--data", str(dataset_dir),
         "--limit", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2
    assert "--limit must be >= 1" in completed.stderr and "Traceback" not in completed.stderr
    assert not out.exists()


@pytest.mark.slow
def test_real_bundled_model_on_a_few_items(dataset_dir, tmp_path):
    """The untrained SmolLM2 on one item per task: runs, answers, and the files agree."""
    out = tmp_path / "base.json"
    result = _eval("--model", "smollm2-135m", "--data", dataset_dir, "--limit", 1, "--threads", 1, "--out", out)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    predictions = [json.loads(line) for line in predictions_path(out).read_text().splitlines()]
    assert saved["model"] == "smollm2-135m" and saved["n_items"] == 3 and len(predictions) == 3
    assert all(p["output"].strip() for p in predictions)  # the real model writes something for each
    for prediction in predictions:
        assert saved["tasks"][prediction["task"]]["accuracy"] == float(prediction["correct"])
