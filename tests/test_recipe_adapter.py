"""The committed recipe adapter (results/recipe/adapter, issue 13) re-checked on CPU: the first 100
spelling items of the test split, with the real bundled model, through the demo's own comparison.
It must spell >= 90 % of these unseen words, and CPU must give the GPU's answers (the committed
predictions) on nearly every item."""

import json
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "results" / "recipe"


@pytest.mark.slow
def test_committed_adapter_spells_unseen_words_on_cpu(tmp_path, bundled_model_path):
    from spelltransfer.cli.demo import RECIPE_BASE_MODEL, recipe_comparison

    pointer = json.loads((RECIPE / "adapter" / "recipe.json").read_text())
    gpu = [json.loads(line) for line in (RECIPE / "adapter" / pointer["test_predictions"]).read_text().splitlines()]
    gpu = [row for row in gpu if row["task"] == "spelling"][:100]
    items = [{**row, "answer": row["gold"]} for row in gpu]
    report, _ = recipe_comparison(RECIPE / "adapter", RECIPE_BASE_MODEL, items, tmp_path, limit=100, batch_size=50,
                                  tasks=["spelling"])
    (row,) = report.rows
    assert row.n == 100 and row.tuned_accuracy >= 0.90, row
    assert row.base_accuracy <= 0.05 and row.gain_ci95[0] > 0.5, row  # the untrained model cannot do it
    cpu = [json.loads(line) for line in next(tmp_path.glob("eval_recipe_*.predictions.jsonl")).read_text().splitlines()]
    same = sum(a["output"] == b["output"] for a, b in zip(gpu, cpu, strict=True))
    assert same >= 95, f"CPU and GPU outputs agree on {same}/100 items"
