"""Reading a sweep: planted effects are found, noise is not called significant, bad files are
named, and the report, JSON and figures land on disk. The statistics are checked against
closed forms (exact permutation p, Newcombe's published example)."""

import csv
import json
import math
import random

import pytest
from typer.testing import CliRunner

from spelltransfer.analyse.sweep import SweepAnalysisConfig, analyse_sweep, spearman_permutation
from spelltransfer.errors import DataError
from spelltransfer.evaluate.evaluator import EvalResult, TaskMetrics
from spelltransfer.evaluate.stats import newcombe_interval

COLUMNS = ["number", "state", "attempts", "worker", "model.lora.r", "optimizer.lr", "spelling_accuracy",
           "position_accuracy", "count_accuracy", "spelling_n", "position_n", "count_n", "objective", "steps",
           "stop_reason", "duration_s", "error"]


def _write(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
    return path


def _planted_sweep(path, n_trials=16):
    """Position accuracy rises with lr (planted); spelling too; rank r is noise."""
    rng = random.Random(0)
    rows = []
    for number in range(n_trials):
        lr = 10 ** rng.uniform(-4, -2.5)
        r = rng.choice([4, 8, 16])
        strength = (math.log10(lr) + 4) / 1.5             # 0..1
        spelling = round(min(1.0, 0.2 + 0.7 * strength + rng.uniform(-0.03, 0.03)), 3)
        position = round(min(1.0, 0.1 + 0.5 * strength + rng.uniform(-0.03, 0.03)), 3)
        count = round(rng.uniform(0.3, 0.5), 3)
        rows.append({"number": number, "state": "COMPLETE", "model.lora.r": r, "optimizer.lr": f"{lr:.6g}",
                     "spelling_accuracy": spelling, "position_accuracy": position, "count_accuracy": count,
                     "spelling_n": 100, "position_n": 100, "count_n": 100, "objective": (position + count) / 2})
    rows.append({"number": n_trials, "state": "FAIL", "model.lora.r": 4, "optimizer.lr": "0.001", "error": "oom"})
    rows.append({"number": n_trials + 1, "state": "PRUNED", "model.lora.r": 8, "optimizer.lr": "0.0001",
                 "spelling_accuracy": 0.1})
    return _write(path, rows)


def test_planted_effect_is_found_and_noise_is_not(tmp_path):
    analysis = analyse_sweep(_planted_sweep(tmp_path / "trials.csv"))
    assert analysis.trials == 16 and analysis.excluded == {"FAIL": 1, "PRUNED": 1}
    assert analysis.params == ["model.lora.r", "optimizer.lr"]
    effect = {(e.param, e.task): e for e in analysis.effects}
    assert effect["optimizer.lr", "position"].rho > 0.9 and effect["optimizer.lr", "position"].p_adjusted < 0.01
    assert effect["optimizer.lr", "spelling"].p_adjusted < 0.01
    assert effect["model.lora.r", "position"].p_adjusted > 0.05
    assert effect["optimizer.lr", "count"].p_adjusted > 0.05
    significant = {(e.param, e.task) for e in analysis.significant()}
    assert significant == {("optimizer.lr", "spelling"), ("optimizer.lr", "position")}
    # Trials that spell better also answer position better (both follow lr).
    assert analysis.spelling_vs_transfer["position"].rho > 0.8
    # A grid parameter (3 values) gets a per-value table; lr (16 values) does not.
    assert [level.value for level in analysis.levels["model.lora.r"]] == ["4", "8", "16"]
    assert sum(level.trials for level in analysis.levels["model.lora.r"]) == 16
    assert "optimizer.lr" not in analysis.levels
    # Best trial by objective first, with Wilson intervals from the recorded n.
    objectives = [t.objective for t in analysis.top]
    assert objectives == sorted(objectives, reverse=True) and len(analysis.top) == 5
    low, high = analysis.top[0].ci95["position"]
    assert low < analysis.top[0].accuracy["position"] < high


def test_report_with_baseline_gains_json_and_figures(tmp_path):
    baseline = {"spelling": {"accuracy": 0.0, "n": 100, "source": "base"},
                "position": {"accuracy": 0.1, "n": 100, "source": "base"},
                "count": {"accuracy": 0.4, "n": 100, "source": "base"}}
    analysis = analyse_sweep(_planted_sweep(tmp_path / "trials.csv"), baseline=baseline,
                             config=SweepAnalysisConfig(top=3))
    best = analysis.top[0]
    assert best.gain["position"] == pytest.approx(best.accuracy["position"] - 0.1)
    low, high = best.gain_ci95["position"]
    assert low < best.gain["position"] < high
    written = analysis.save(tmp_path / "out")
    assert json.loads(written["json"].read_text())["trials"] == 16
    text = written["markdown"].read_text()
    assert "**rho +" in text and "gain +" in text and "figures/accuracy_by_parameter.png" in text
    for key in ("params_figure", "transfer_figure"):
        assert written[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").rglob("*.tmp*"))  # atomic writes leave no temporaries


def test_spearman_permutation_is_exact_for_small_sweeps():
    from scipy.stats import spearmanr

    rho, p = spearman_permutation([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 24)   # two of 4! orderings are as extreme
    rho, p = spearman_permutation([8, 8, 16, 16], [0.25, 0.25, 0.0, 0.0])
    assert rho == pytest.approx(-1.0) and p == pytest.approx(1 / 3)   # ties: 8 of 24 pairings as extreme
    rng = random.Random(1)
    xs = [rng.random() for _ in range(40)]
    ys = [x + rng.gauss(0, 0.5) for x in xs]
    rho, p = spearman_permutation(xs, ys)
    reference = spearmanr(xs, ys)
    assert rho == pytest.approx(reference.statistic) and p == pytest.approx(reference.pvalue, abs=0.01)


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80, method 10.
    low, high = newcombe_interval(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,2\n", "column 'number' is missing"),
    ("number,state,lr\n0,COMPLETE,0.1\n", "no accuracy column"),
    ("number,state,lr,spelling_accuracy\n0,COMPLETE,0.1,high\n", "line 2: column 'spelling_accuracy' is not a number"),
    ("number,state,lr,spelling_accuracy\n0,FAIL,0.1,\n", "no completed trial"),
])
def test_bad_trials_files_are_named(tmp_path, content, message):
    path = tmp_path / "trials.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        analyse_sweep(path)
    with pytest.raises(DataError, match="does not exist"):
        analyse_sweep(tmp_path / "missing.csv")


def test_cli_reads_a_sweep_by_name_with_a_baseline(tmp_path):
    from spelltransfer.cli import app

    sweep_dir = tmp_path / "results" / "metrics" / "grid"
    sweep_dir.mkdir(parents=True)
    _planted_sweep(sweep_dir / "trials.csv")
    tasks = {t: TaskMetrics(n=100, correct=c, accuracy=c / 100, ci95=[0.0, 1.0], answered=1.0, answered_in_form=1.0,
                            trivial_baseline=0.0, trivial_answer="a")
             for t, c in (("spelling", 0), ("position", 10), ("count", 40))}
    base = EvalResult(tasks=tasks, model="smollm2-135m", split="validation", n_items=300, seconds=1.0,
                      items_per_second=300.0)
    base.save(tmp_path / "base.json")
    runner = CliRunner()
    result = runner.invoke(app, ["analyse", "sweep", "grid", "--results-dir", str(tmp_path / "results"),
                                 "--baseline", str(tmp_path / "base.json")])
    assert result.exit_code == 0, result.output
    assert "spelling vs position: rho +" in result.output
    report = (tmp_path / "results" / "analysis" / "grid" / "sweep_analysis.md").read_text()
    assert "Untrained baseline on the validation items: spelling 0.0 % (n=100)" in report

    tuned = base.model_copy(update={"adapter": "runs/x/final"})
    tuned.save(tmp_path / "tuned.json")
    result = runner.invoke(app, ["analyse", "sweep", "grid", "--results-dir", str(tmp_path / "results"),
                                 "--baseline", str(tmp_path / "tuned.json")])
    assert result.exit_code != 0 and "not the untrained model" in str(result.exception)
