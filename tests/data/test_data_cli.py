"""`spelltransfer data build|show` end to end, and bad input -> message + exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from spelltransfer.cli import app
from spelltransfer.errors import ConfigError, DataError, ModelNotFoundError

runner = CliRunner()


def test_build_then_show(tmp_path):
    out = tmp_path / "ds"
    result = runner.invoke(app, ["data", "build", "--out", str(out), "--seed", "3", "--train-words", "200",
                                 "--eval-words", "300", "--train-size", "200", "--validation-per-task", "10",
                                 "--test-per-task", "20"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["counts"]["test"] == {"spelling": 20, "position": 20, "count": 20}
    assert manifest["content_sha256"] in result.output.replace("\n", "")

    shown = runner.invoke(app, ["data", "show", str(out), "--split", "test", "--task", "count", "-n", "3"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("count/") == 3 and "spelling/" not in shown.output
    first_count = next(json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()
                       if json.loads(line)["task"] == "count")
    assert first_count["word"] in shown.output


def test_bad_input_raises_typed_errors(tmp_path):
    result = runner.invoke(app, ["data", "show", str(tmp_path / "missing")])
    assert isinstance(result.exception, DataError)
    result = runner.invoke(app, ["data", "build", "--out", str(tmp_path / "x"), "--test-per-task", "0"])
    assert isinstance(result.exception, ConfigError) and "test_per_task" in str(result.exception)
    assert not (tmp_path / "x").exists()
    result = runner.invoke(app, ["data", "build", "--out", str(tmp_path / "x"), "--model", str(tmp_path / "no-model")])
    assert isinstance(result.exception, ModelNotFoundError) and "does not exist" in str(result.exception)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.build-*"))
    result = runner.invoke(app, ["data", "show", str(tmp_path), "--split", "dev"])
    assert isinstance(result.exception, DataError) and "split 'dev'" in str(result.exception)


def test_cli_exit_code_and_message(tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"task": "count"}\n')
    result = subprocess.run([sys.executable, "-m", "spelltransfer.cli", "data", "show", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "test.jsonl:1: missing field" in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
