"""Does a model answer the same through the vLLM API as in-process? Same questions, both ways.

Both sides decode greedily from the same chat-formatted prompt (``PromptFormat``; vLLM's
``/v1/completions`` receives the already formatted text) through the evaluator's engines
(``spelltransfer.evaluate.generation``): ``HFGenerationEngine`` in this process and
``OpenAICompletionsEngine`` against the server, and are scored by the evaluator's ``score``. Greedy decoding in two different kernels (HF
eager attention vs vLLM's CPU paged attention, fp32 both) can still flip a near-tie, so the check
is a tolerance, not equality:

    |accuracy_api - accuracy_in_process| <= TOLERANCE_ABS per task, and
    identical answers on >= MIN_AGREEMENT of the questions.

Results go to ``OUT/data/api_eval.json`` for the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from spelltransfer.atomic import write_text_atomic
from spelltransfer.serving.prompts import study_questions

TOLERANCE_ABS = 0.05
MIN_AGREEMENT = 0.90


def grade(question: dict, output: str) -> bool:
    """The evaluator's own scoring (answer extraction + canonical comparison)."""
    from spelltransfer.evaluate.evaluator import score

    return score(question, output, 0).correct


def compare(questions: list[dict], in_process: list[str], api: list[str]) -> dict:
    by_task: dict[str, dict] = {}
    for question, local, remote in zip(questions, in_process, api, strict=True):
        figures = by_task.setdefault(question["task"], {"n": 0, "in_process": 0, "api": 0, "agreement": 0})
        figures["n"] += 1
        figures["in_process"] += grade(question, local)
        figures["api"] += grade(question, remote)
        figures["agreement"] += local == remote
    for figures in by_task.values():
        for key in ("in_process", "api", "agreement"):
            figures[key] /= figures["n"]
        figures["within_tolerance"] = (abs(figures["api"] - figures["in_process"]) <= TOLERANCE_ABS
                                       and figures["agreement"] >= MIN_AGREEMENT)
    return by_task


def evaluate_api_vs_in_process(base_url: str, served: dict[str, Path | None], n: int = 60,
                               model: str = "smollm2-135m", data_dir: Path | None = None,
                               out_dir: Path | None = None) -> dict:
    """``served``: served name -> adapter folder (None for the base model). Returns the comparison."""
    from spelltransfer.evaluate.evaluator import token_budget
    from spelltransfer.evaluate.generation import HFGenerationEngine, OpenAICompletionsEngine

    questions = study_questions(n, data_dir=data_dir)
    prompts = [q["prompt"] for q in questions]
    caps = [token_budget(q) for q in questions]  # the evaluator's per-task budgets
    result = {"n": len(questions), "tolerance": (
        f"greedy, fp32 on both sides, same chat-formatted prompts; pass = |accuracy difference| <= "
        f"{100 * TOLERANCE_ABS:.0f} points per task and identical answers on >= {100 * MIN_AGREEMENT:.0f} % "
        f"of the questions"), "models": {}, "answers": {}}
    for name, adapter in served.items():
        local_engine = HFGenerationEngine(model, adapter_dir=adapter, batch_size=16, dtype="float32", device="cpu")
        try:
            local = local_engine.generate(prompts, caps)
        finally:
            local_engine.close()
        remote = OpenAICompletionsEngine(base_url, name, api_key_env=None, prompt_model=model).generate(prompts, caps)
        result["models"][name] = compare(questions, local, remote)
        result["answers"][name] = [{"task": q["task"], "answer": q["answer"], "in_process": a, "api": b}
                                   for q, a, b in zip(questions, local, remote)]
    if out_dir is not None:
        data = Path(out_dir) / "data"
        data.mkdir(parents=True, exist_ok=True)
        write_text_atomic(data / "api_eval.json", json.dumps(result, indent=2), fsync=False)
    return result
