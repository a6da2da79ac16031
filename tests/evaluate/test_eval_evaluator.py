"""evaluate_model end to end on the tiny model, the scoring summary, and bad input."""

import json

import pytest

from spelltransfer.errors import ConfigError, DataError
from spelltransfer.evaluate import EvalResult, HFGenerationEngine, evaluate_model
from spelltransfer.evaluate.evaluator import predictions_path, score, select_items, summarise_task, token_budget


def test_scoring_summary_counts_form_baseline_and_breakdowns(items):
    counts = [item for item in items if item["task"] == "count"]  # golds 3, 0, 1
    outputs = ["3", "There are no q's in cledge.", "1-g-a-r"]
    predictions = [score(item, output, i) for i, (item, output) in enumerate(zip(counts, outputs))]
    assert [p.correct for p in predictions] == [True, True, False]
    assert [p.extracted for p in predictions] == ["3", "0", None]
    metrics = summarise_task("count", predictions)
    assert metrics.accuracy == pytest.approx(2 / 3) and metrics.n == 3 and metrics.correct == 2
    assert metrics.ci95[0] < 2 / 3 < metrics.ci95[1]
    assert metrics.answered == pytest.approx(2 / 3)
    assert metrics.answered_in_form == pytest.approx(1 / 3)  # only the bare "3"
    assert metrics.trivial_baseline == pytest.approx(1 / 3)  # three different golds
    assert metrics.edit_similarity is None
    assert metrics.by_template["count/0"].n == 2 and metrics.by_template["count/0"].accuracy == pytest.approx(0.5)
    assert set(metrics.by_word_length) == {"6", "10"}


def test_trivial_baseline_is_most_common_gold(items):
    counts = [dict(item, answer="1") for item in items if item["task"] == "count"]
    counts[0]["answer"] = "2"
    metrics = summarise_task("count", [score(item, "1", i) for i, item in enumerate(counts)])
    assert metrics.trivial_answer == "1" and metrics.trivial_baseline == pytest.approx(2 / 3)
    assert metrics.accuracy == pytest.approx(2 / 3)  # "always 1" is exactly the trivial baseline


def test_spelling_edit_similarity(items):
    spelling = [item for item in items if item["task"] == "spelling"]
    predictions = [score(spelling[0], "g-a-r-d-n", 0), score(spelling[1], "T U L L E", 1)]
    metrics = summarise_task("spelling", predictions)
    assert [p.correct for p in predictions] == [False, True]
    assert [p.in_form for p in predictions] == [True, True]
    assert metrics.edit_similarity == pytest.approx((5 / 6 + 1.0) / 2)


def test_limit_is_per_task_and_deterministic(items):
    picked = select_items(items, limit=2)
    assert [p["prompt"] for p in picked] == [items[i]["prompt"] for i in (0, 1, 3, 4, 6, 7)]
    assert [p["task"] for p in select_items(items, tasks=["count"])] == ["count"] * 3


def test_token_budget_scales_with_word_length(items):
    assert token_budget(items[0]) > token_budget(items[1])  # garden (6) vs tulle (5)
    assert token_budget(items[3]) == token_budget(items[6])
    assert token_budget(items[0], max_new_tokens=5) == 5


def test_evaluate_tiny_model_writes_result_and_predictions(tiny_engine, items, tmp_path):
    out = tmp_path / "res" / "tiny.json"
    result = evaluate_model(tiny_engine, items, out=out, data="handwritten", split="test", progress=True)
    saved = json.loads(out.read_text())
    assert set(saved["tasks"]) == {"spelling", "position", "count"}
    for metrics in saved["tasks"].values():
        assert {"accuracy", "ci95", "n", "answered_in_form", "trivial_baseline", "by_word_length", "by_template"} <= set(metrics)
        assert metrics["n"] == 3 and 0 <= metrics["ci95"][0] <= metrics["accuracy"] <= metrics["ci95"][1] <= 1
    assert saved["n_items"] == 9 and saved["data"] == "handwritten" and saved["split"] == "test"
    assert saved["items_per_second"] > 0 and saved["model"] == tiny_engine.model_name
    lines = [json.loads(line) for line in predictions_path(out).read_text().splitlines()]
    assert len(lines) == 9 and [line["prompt"] for line in lines] == [item["prompt"] for item in items]
    assert {"prompt", "gold", "output", "extracted", "correct", "in_form"} <= set(lines[0])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    reloaded = EvalResult.load(out)
    assert reloaded.tasks == result.tasks and len(reloaded.predictions) == 9


def test_outputs_do_not_depend_on_batching_or_prefix_sharing(chatty_model_path, items):
    questions = [item["prompt"] for item in items]
    budgets = [token_budget(item) for item in items]
    runs = []
    for batch_size, share_prefix in ((1, False), (4, True), (9, True)):
        engine = HFGenerationEngine(chatty_model_path, batch_size=batch_size, share_prefix=share_prefix, device="cpu")
        runs.append(engine.generate(questions, budgets))
    assert runs[0] == runs[1] == runs[2]
    assert all(runs[0]) and len(set(runs[0])) > 1  # varied text, so the equality means something


def test_in_memory_model_keeps_its_training_mode(tiny_model_path, items):
    from spelltransfer.models import load_model, load_tokenizer

    model = load_model(tiny_model_path, device="cpu").train()
    engine = HFGenerationEngine.from_model(model, load_tokenizer(tiny_model_path), batch_size=8)
    result = evaluate_model(engine, items, limit=1, progress=False)
    assert model.training and result.n_items == 3 and result.model == "in-memory"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"limit": 0}, ConfigError, "limit"),
        ({"tasks": ["rhyme"]}, ConfigError, "rhyme"),
        ({"max_new_tokens": 0}, ConfigError, "max_new_tokens"),
    ],
)
def test_bad_options_fail_before_writing(tiny_engine, items, tmp_path, kwargs, error, message):
    out = tmp_path / "r.json"
    with pytest.raises(error, match=message):
        evaluate_model(tiny_engine, items, out=out, progress=False, **kwargs)
    assert not out.exists() and not predictions_path(out).exists()


def test_bad_examples_fail_with_clear_errors(tiny_engine, items, tmp_path):
    with pytest.raises(DataError, match="no examples"):
        evaluate_model(tiny_engine, [], progress=False)
    with pytest.raises(DataError, match="no examples to evaluate for tasks count"):
        evaluate_model(tiny_engine, items[:3], tasks=["count"], progress=False)
    with pytest.raises(DataError, match="example 2 has no 'answer'"):
        evaluate_model(tiny_engine, [items[0], dict(items[1], answer="")], progress=False)
    with pytest.raises(DataError, match="unknown task 'rhyme'"):
        evaluate_model(tiny_engine, [dict(items[0], task="rhyme")], progress=False)


def test_example_objects_are_accepted(tiny_engine, items):
    from spelltransfer.data import Example

    examples = [Example(**item) for item in items[:3]]
    assert evaluate_model(tiny_engine, examples, progress=False).tasks["spelling"].n == 3


def test_adapter_is_loaded_and_merged(chatty_model_path, items, tmp_path):
    tiny_model_path = chatty_model_path
    """A real PEFT LoRA adapter (non-zero B) changes the outputs; merged equals unmerged."""
    import torch
    from peft import LoraConfig, get_peft_model

    from spelltransfer.models import load_model

    peft_model = get_peft_model(load_model(tiny_model_path, device="cpu"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    questions = [item["prompt"] for item in items]
    base = HFGenerationEngine(tiny_model_path, batch_size=9, device="cpu").generate(questions, 8)
    merged = HFGenerationEngine(tiny_model_path, adapter_dir=adapter, batch_size=9, device="cpu").generate(questions, 8)
    unmerged = HFGenerationEngine(tiny_model_path, adapter_dir=adapter, merge_adapter=False, batch_size=9,
                                  device="cpu").generate(questions, 8)
    assert merged != base
    assert merged == unmerged
