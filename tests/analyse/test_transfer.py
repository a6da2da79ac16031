"""The base-vs-tuned transfer table built from two saved evaluations."""

import json

import pytest

from spelltransfer.analyse import compare_results
from spelltransfer.errors import DataError
from spelltransfer.evaluate.evaluator import EvalResult, Prediction, summarise_task


def _result(model: str, correct: list[bool], task: str = "count", form: bool = True) -> EvalResult:
    predictions = [
        Prediction(index=i, task=task, word=f"w{i}", template_id=f"{task}/0", prompt=f"q{i}", gold="1",
                   output="1" if ok else "2", extracted="1" if ok else "2", in_form=form, correct=ok)
        for i, ok in enumerate(correct)
    ]
    return EvalResult(tasks={task: summarise_task(task, predictions)}, model=model, n_items=len(predictions),
                      seconds=1.0, items_per_second=1.0, predictions=predictions)


def test_gain_interval_and_mcnemar_match_the_paired_table(tmp_path):
    base = _result("base", [True] * 10 + [False] * 30)
    tuned = _result("tuned", [True] * 10 + [True] * 20 + [False] * 10)
    report = compare_results(base, tuned)
    (row,) = report.rows
    assert row.n == 40 and row.base_accuracy == pytest.approx(0.25) and row.tuned_accuracy == pytest.approx(0.75)
    assert row.gain == pytest.approx(0.5)
    assert row.gain_ci95[0] > 0.3 and row.gain_ci95[1] < 0.7
    assert row.mcnemar_p == pytest.approx(2 * 0.5 ** 20)  # 20 discordant pairs, all for tuned
    assert row.trivial_baseline == 1.0  # every gold answer is "1"
    json_path, md_path = report.save(tmp_path)
    assert json.loads(json_path.read_text())["tasks"]["count"]["n"] == 40
    assert "| count | 40 |" in md_path.read_text()


def test_results_on_different_items_do_not_compare():
    base = _result("base", [True, False])
    other = _result("tuned", [True, True], task="position")
    with pytest.raises(DataError, match="share no items"):
        compare_results(base, other)
