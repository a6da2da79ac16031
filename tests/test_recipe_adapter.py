"""The committed recipe adapter (results/recipe/adapter, issue 13) re-checked on CPU with the real
bundled model: all 300 spelling items of the test split (unseen multi-token words, bare and quoted).
It must spell >= 90 % of them, and CPU (fp32) must give the GPU's (bf16) answers, committed beside
it, on nearly every item. The untrained model's 0 % on the same items is in
results/recipe/evals/untrained_direct.json; `make demo` recomputes it."""

import json
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "results" / "recipe"


@pytest.mark.slow
def test_committed_adapter_spells_unseen_words_on_cpu(tmp_path, bundled_model_path):
    from spelltransfer.cli.demo import RECIPE_BASE_MODEL
    from spelltransfer.evaluate.evaluator import evaluate_model
    from spelltransfer.evaluate.generation import HFGenerationEngine

    pointer = json.loads((RECIPE / "adapter" / "recipe.json").read_text())
    gpu = [json.loads(line) for line in (RECIPE / "adapter" / pointer["test_predictions"]).read_text().splitlines()]
    gpu = [row for row in gpu if row["task"] == "spelling"]
    assert len(gpu) == 300
    engine = HFGenerationEngine(RECIPE_BASE_MODEL, adapter_dir=RECIPE / "adapter", batch_size=60)
    try:
        result = evaluate_model(engine, [{**row, "answer": row["gold"]} for row in gpu], out=tmp_path / "cpu.json",
                                progress=False)
    finally:
        engine.close()
    spelling = result.tasks["spelling"]
    assert spelling.n == 300 and spelling.accuracy >= 0.90, (spelling.accuracy, spelling.ci95)
    cpu = [json.loads(line) for line in (tmp_path / "cpu.predictions.jsonl").read_text().splitlines()]
    same = sum(a["output"] == b["output"] for a, b in zip(gpu, cpu, strict=True))
    assert same >= 291, f"CPU and GPU outputs agree on {same}/300 items"
