"""Pairing two saved results item by item; malformed result files."""

import json
import random

import pytest
from typer.testing import CliRunner

from spelltransfer.cli import app
from spelltransfer.errors import DataError
from spelltransfer.evaluate import EvalResult, compare_results
from spelltransfer.evaluate.evaluator import predictions_path, score, summarise_task


def _save(path, items, outputs, shuffle_seed=None):
    predictions = [score(item, output, i) for i, (item, output) in enumerate(zip(items, outputs))]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(predictions)
    tasks = {}
    for task in ("spelling", "position", "count"):
        task_predictions = [p for p in predictions if p.task == task]
        if task_predictions:
            tasks[task] = summarise_task(task, task_predictions)
    result = EvalResult(tasks=tasks, model="m", n_items=len(predictions), seconds=1.0, items_per_second=1.0,
                        predictions=predictions)
    return result.save(path)


BASE_OUTPUTS = ["g a r d e n", "t u l l e", "no idea", "The 3rd letter is 'd'.", "e", "c", "1", "1", "1"]
TUNED_OUTPUTS = ["g-a-r-d-e-n", "t u l l e", "s, h, i, l, f, a", "r", "e", "k", "3", "0", "2"]


def test_compare_pairs_items_whatever_their_order(tmp_path, items):
    a = _save(tmp_path / "a.json", items, BASE_OUTPUTS)
    b = _save(tmp_path / "b.json", items, TUNED_OUTPUTS, shuffle_seed=3)
    comparison = compare_results(a, b)
    spelling, position, count = (comparison.tasks[t] for t in ("spelling", "position", "count"))
    # spelling: A right on tulle only (garden had the wrong separator but the right letters).
    assert (spelling.both_right, spelling.a_only, spelling.b_only, spelling.both_wrong) == (2, 0, 1, 0)
    assert (position.both_right, position.a_only, position.b_only, position.both_wrong) == (1, 1, 1, 0)
    assert (count.both_right, count.a_only, count.b_only, count.both_wrong) == (0, 1, 2, 0)
    assert count.gain == pytest.approx(1 / 3) and count.ci95[0] < count.gain < count.ci95[1]
    assert comparison.notes == []


def test_compare_notes_unpaired_items_and_rejects_disjoint_sets(tmp_path, items):
    a = _save(tmp_path / "a.json", items, BASE_OUTPUTS)
    b = _save(tmp_path / "b.json", items[:6], TUNED_OUTPUTS[:6])
    comparison = compare_results(a, b)
    assert set(comparison.tasks) == {"spelling", "position"}
    assert comparison.notes == ["paired 6 items; 3 only in A, 0 only in B"]
    c = _save(tmp_path / "c.json", [dict(item, prompt=item["prompt"] + " Now.") for item in items], BASE_OUTPUTS)
    with pytest.raises(DataError, match="share no items"):
        compare_results(a, c)


def test_compare_cli_prints_gain_interval_and_p(tmp_path, items):
    a = _save(tmp_path / "a.json", items, BASE_OUTPUTS)
    b = _save(tmp_path / "b.json", items, TUNED_OUTPUTS)
    result = CliRunner().invoke(app, ["eval", "--compare", str(a), str(b)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "count" in result.output and "+33.3%" in result.output and "McNemar" in result.output


def test_malformed_result_files_name_file_and_line(tmp_path, items):
    a = _save(tmp_path / "a.json", items, BASE_OUTPUTS)
    b = _save(tmp_path / "b.json", items, TUNED_OUTPUTS)
    lines = predictions_path(b).read_text().splitlines()
    lines[1] = '{"task": "count", "prompt": 5'
    predictions_path(b).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"b\.predictions\.jsonl:2: not a prediction record"):
        compare_results(a, b)
    predictions_path(b).unlink()
    with pytest.raises(DataError, match=r"predictions file .*b\.predictions\.jsonl does not exist"):
        compare_results(a, b)
    (tmp_path / "bad.json").write_text(json.dumps({"tasks": 3}))
    with pytest.raises(DataError, match="bad.json is not an evaluation result"):
        compare_results(a, tmp_path / "bad.json")
    with pytest.raises(DataError, match="does not exist"):
        compare_results(a, tmp_path / "missing.json")
