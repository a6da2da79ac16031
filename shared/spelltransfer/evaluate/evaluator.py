"""Score a model on task examples: generate, extract, compare with gold, summarise per task.

``evaluate_model`` is the one entry point (CLI, trainer validation, services). Beside accuracy
and its Wilson interval each task reports what keeps a transfer figure honest: the share of
answers given in the asked form and the accuracy of a trivial baseline that always gives the
task's most common gold answer (always "1" scores about half of count questions).

Result files: ``FILE.json`` (summary) and ``FILE.predictions.jsonl`` (one line per item), both
written atomically; the predictions land first, so a summary never exists without them.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from spelltransfer.atomic import write_text_atomic
from spelltransfer.data.modes import SPELL_FORMS
from spelltransfer.errors import ConfigError, DataError
from spelltransfer.evaluate import answers
from spelltransfer.evaluate.generation import GenerationEngine, HFGenerationEngine
from spelltransfer.evaluate.stats import wilson_interval

TASKS = answers.TASKS
# Token budgets, measured on SmolLM2's tokenizer: a spelled letter plus separator is 2 tokens
# ("g-", "g,", "g "), and an untrained model's preamble ("The word 'x' is spelled ...") ~10.
# Position and count answers need 1-3 tokens bare; a sentence answer fits in 24.
SPELLING_TOKENS_PER_LETTER = 2
SPELLING_EXTRA_TOKENS = 12
MARK_TOKENS = 4  # "(12)" after a letter in spell_marked
SHORT_ANSWER_TOKENS = {"position": 24, "count": 24}


class Bucket(BaseModel):
    n: int
    accuracy: float


class TaskMetrics(BaseModel):
    accuracy: float
    ci95: list[float]
    n: int
    correct: int
    answered: float = Field(description="share of outputs from which an answer could be extracted")
    answered_in_form: float = Field(description="share of outputs that were the answer in the asked form")
    trivial_baseline: float = Field(description="accuracy of always giving the most common gold answer")
    trivial_answer: str
    edit_similarity: float | None = Field(None, description="spelling: mean normalized edit similarity")
    by_word_length: dict[str, Bucket] = {}
    by_template: dict[str, Bucket] = {}
    by_presentation: dict[str, Bucket] = {}
    spelled_correct: float | None = Field(None, description="spell_first/spell_marked: share whose spelling before the answer was right")


class Prediction(BaseModel):
    index: int
    task: str
    word: str | None
    template_id: str | None
    prompt: str
    gold: str
    output: str
    extracted: str | None
    in_form: bool
    correct: bool
    edit_similarity: float | None = None
    presentation: str | None = None
    mode: str = "direct"
    spelled_correct: bool | None = None

    def key(self) -> tuple:
        """Identity of the item, for pairing two evaluations of the same items."""
        return (self.task, self.prompt, self.gold)


class EvalResult(BaseModel):
    tasks: dict[str, TaskMetrics]
    model: str
    adapter: str | None = None
    data: str | None = None
    split: str | None = None
    n_items: int
    seconds: float
    items_per_second: float
    batch_size: int | None = None
    mode: str = "direct"
    predictions: list[Prediction] = Field(default_factory=list, exclude=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` and ``path``'s predictions JSONL atomically; returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(p.model_dump(), ensure_ascii=False) + "\n" for p in self.predictions)
        write_text_atomic(predictions_path(path), lines)
        write_text_atomic(path, json.dumps(self.model_dump(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, with_predictions: bool = True) -> "EvalResult":
        """Read a saved result (and its predictions); malformed files raise DataError naming them."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"result file {path} does not exist")
        try:
            result = cls.model_validate_json(path.read_text())
        except (ValidationError, ValueError) as error:
            raise DataError(f"{path} is not an evaluation result: {str(error).splitlines()[0]}") from error
        if with_predictions:
            result.predictions = load_predictions(predictions_path(path))
        return result


def predictions_path(result_path: str | os.PathLike) -> Path:
    """``results/base.json`` -> ``results/base.predictions.jsonl``."""
    result_path = Path(result_path)
    return result_path.with_name(result_path.stem + ".predictions.jsonl")


def load_predictions(path: Path) -> list[Prediction]:
    if not path.is_file():
        raise DataError(f"predictions file {path} does not exist (it is written beside the result JSON)")
    predictions = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                predictions.append(Prediction.model_validate_json(line))
            except (ValidationError, ValueError) as error:
                raise DataError(f"{path}:{line_number}: not a prediction record: {str(error).splitlines()[0]}") from error
    return predictions


# ------------------------------------------------------------------------------ items


def _field(example: Any, name: str, default=None):
    if isinstance(example, Mapping):
        return example.get(name, default)
    return getattr(example, name, default)


def as_items(examples: Iterable[Any]) -> list[dict]:
    """Example records (objects or dicts) -> plain dicts, checking the fields scoring needs."""
    items = []
    for number, example in enumerate(examples, 1):
        item = {name: _field(example, name) for name in ("task", "word", "prompt", "answer", "template_id", "presentation")}
        for required in ("task", "prompt", "answer"):
            if item[required] is None or str(item[required]).strip() == "":
                raise DataError(f"example {number} has no '{required}'")
        item["answer"] = str(item["answer"])
        if item["task"] not in TASKS:
            raise DataError(f"example {number} has unknown task {item['task']!r}; expected one of {', '.join(TASKS)}")
        items.append(item)
    return items


def select_items(items: list[dict], tasks: Sequence[str] | None = None, limit: int | None = None) -> list[dict]:
    """Keep the asked tasks, and the first ``limit`` items of each task (deterministic)."""
    if tasks is not None:
        unknown = [task for task in tasks if task not in TASKS]
        if unknown:
            raise ConfigError(f"tasks: unknown {', '.join(unknown)}; choose from {', '.join(TASKS)}")
        items = [item for item in items if item["task"] in tasks]
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be >= 1 (items per task), got {limit}")
        taken: Counter = Counter()
        kept = []
        for item in items:
            if taken[item["task"]] < limit:
                taken[item["task"]] += 1
                kept.append(item)
        items = kept
    return items


def prepare_items(examples: Iterable[Any], tasks: Sequence[str] | None = None, limit: int | None = None,
                  mode: str = "direct") -> list[dict]:
    """The items an evaluation asks: checked records of the asked tasks (first ``limit`` per task),
    each prompt as ``mode`` asks it (the spell-first modes append their instruction)."""
    from spelltransfer.data.modes import check_mode, eval_prompt, question_form

    try:
        form = question_form(check_mode(mode))
    except ValueError as error:
        raise ConfigError(f"mode: {error}") from None
    items = select_items(as_items(examples), tasks, limit)
    for item in items:
        item["prompt"] = eval_prompt(item["task"], item["prompt"], form)
        item["mode"] = form
    return items


def token_budget(item: dict, max_new_tokens: int | None = None) -> int:
    """New tokens allowed for an item's answer: enough for the answer plus a short preamble."""
    if max_new_tokens is not None:
        return max_new_tokens
    if item["task"] == "spelling":
        letters = len(answers.gold_value("spelling", item["answer"]))
        return SPELLING_TOKENS_PER_LETTER * letters + SPELLING_EXTRA_TOKENS
    if item.get("mode", "direct") in SPELL_FORMS and item.get("word"):
        # spell_marked writes the letters twice, the second time with marks (data/modes.py)
        per_letter = SPELLING_TOKENS_PER_LETTER + (SPELLING_TOKENS_PER_LETTER + MARK_TOKENS if item["mode"] == "spell_marked" else 0)
        return per_letter * len(item["word"]) + SPELLING_EXTRA_TOKENS + SHORT_ANSWER_TOKENS[item["task"]]
    return SHORT_ANSWER_TOKENS[item["task"]]


# ------------------------------------------------------------------------------ scoring


def score(item: dict, output: str, index: int) -> Prediction:
    """One item's prediction record: extracted answer, asked form, correctness."""
    task = item["task"]
    gold = answers.gold_value(task, item["answer"])
    spelled_correct = None
    if item.get("mode", "direct") in SPELL_FORMS and task != "spelling":
        extraction = answers.extract_spell_first(task, output)
        spelled_correct = item.get("word") is not None and extraction.spelled == item.get("word")
    else:
        extraction = answers.extract(task, output, item["answer"])
    similarity = answers.edit_similarity(extraction.value, gold) if task == "spelling" else None
    return Prediction(
        index=index,
        task=task,
        word=item.get("word"),
        template_id=None if item.get("template_id") is None else str(item["template_id"]),
        prompt=item["prompt"],
        gold=item["answer"],
        output=output,
        extracted=extraction.value,
        in_form=extraction.in_form,
        correct=extraction.value is not None and extraction.value == gold,
        edit_similarity=similarity,
        presentation=item.get("presentation"),
        mode=item.get("mode", "direct"),
        spelled_correct=spelled_correct,
    )


def _buckets(predictions: list[Prediction], key) -> dict[str, Bucket]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for prediction in predictions:
        groups[key(prediction)].append(prediction.correct)
    ordered = sorted(groups.items(), key=lambda kv: (len(kv[0]), kv[0]))
    return {name: Bucket(n=len(flags), accuracy=sum(flags) / len(flags)) for name, flags in ordered}


def summarise_task(task: str, predictions: list[Prediction]) -> TaskMetrics:
    n = len(predictions)
    correct = sum(p.correct for p in predictions)
    gold_counts = Counter(answers.gold_value(task, p.gold) for p in predictions)
    trivial_answer, trivial_hits = gold_counts.most_common(1)[0]
    lo, hi = wilson_interval(correct, n)
    return TaskMetrics(
        accuracy=correct / n,
        ci95=[lo, hi],
        n=n,
        correct=correct,
        answered=sum(p.extracted is not None for p in predictions) / n,
        answered_in_form=sum(p.in_form for p in predictions) / n,
        trivial_baseline=trivial_hits / n,
        trivial_answer=trivial_answer,
        edit_similarity=(sum(p.edit_similarity or 0.0 for p in predictions) / n) if task == "spelling" else None,
        by_word_length=_buckets(predictions, lambda p: str(len(p.word)) if p.word else "unknown"),
        by_template=_buckets(predictions, lambda p: p.template_id or "unknown"),
        by_presentation=_buckets(predictions, lambda p: p.presentation or "unknown"),
        spelled_correct=(sum(bool(p.spelled_correct) for p in predictions) / n)
        if any(p.spelled_correct is not None for p in predictions) else None,
    )


def score_outputs(items: list[dict], outputs: list[str]) -> tuple[list[Prediction], dict[str, TaskMetrics]]:
    """The validation scorer: generated ``outputs`` (one per item, any engine) -> predictions and
    per-task metrics. ``spelltransfer eval``, the trainer's accuracy early stopping, a packed
    member's evaluation and ``platform.eval_job`` all score through here."""
    if len(outputs) != len(items):
        raise ValueError(f"{len(outputs)} outputs for {len(items)} items")
    predictions = [score(item, output, index) for index, (item, output) in enumerate(zip(items, outputs))]
    by_task: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_task[prediction.task].append(prediction)
    return predictions, {task: summarise_task(task, by_task[task]) for task in TASKS if task in by_task}


def accuracy_metrics(tasks: Mapping[str, TaskMetrics]) -> dict[str, float]:
    """The eval-event accuracies of a scored sample: ``accuracy`` (micro-averaged over tasks) and
    ``accuracy_<task>``; what early stopping on ``accuracy`` compares, whichever engine trained."""
    correct = sum(task.correct for task in tasks.values())
    total = sum(task.n for task in tasks.values())
    return {"accuracy": correct / total, **{f"accuracy_{name}": task.accuracy for name, task in tasks.items()}}


# ------------------------------------------------------------------------------ entry point


def evaluate_model(
    engine_or_model_name: GenerationEngine | str,
    examples: Iterable[Any],
    *,
    adapter: str | os.PathLike | None = None,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
    dtype: str = "auto",
    device: str | None = None,
    out: str | os.PathLike | None = None,
    data: str | None = None,
    split: str | None = None,
    progress: bool = True,
    mode: str = "direct",
) -> EvalResult:
    """Evaluate a model (an engine, or a model name loaded here) on example records.

    ``examples``: Example records or dicts with task, prompt, answer (word, template_id used for
    breakdowns). ``limit``: first N items per task. ``max_new_tokens``: one budget for every item
    instead of the per-task default. ``out``: also save ``out`` and its predictions JSONL.
    """
    items = prepare_items(examples, tasks, limit, mode)
    if not items:
        raise DataError("no examples to evaluate" + (f" for tasks {', '.join(tasks)}" if tasks else ""))
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")

    owns_engine = isinstance(engine_or_model_name, str)
    if owns_engine:
        engine = HFGenerationEngine(engine_or_model_name, adapter_dir=adapter, batch_size=batch_size, dtype=dtype, device=device)
    else:
        if adapter is not None:
            raise ConfigError("adapter is given to the engine, not to evaluate_model, when passing an engine")
        engine = engine_or_model_name
    try:
        started = time.perf_counter()
        outputs = _generate(engine, items, max_new_tokens, progress)
        seconds = time.perf_counter() - started
    finally:
        if owns_engine:
            engine.close()

    predictions, task_metrics = score_outputs(items, outputs)
    result = EvalResult(
        tasks=task_metrics,
        model=engine.model_name,
        adapter=engine.adapter,
        data=data,
        split=split,
        n_items=len(items),
        seconds=round(seconds, 3),
        items_per_second=round(len(items) / seconds, 3) if seconds > 0 else 0.0,
        batch_size=getattr(engine, "batch_size", None),
        mode=mode,
        predictions=predictions,
    )
    if out is not None:
        result.save(out)
    return result


def _generate(engine: GenerationEngine, items: list[dict], max_new_tokens: int | None, progress: bool) -> list[str]:
    questions = [item["prompt"] for item in items]
    budgets = [token_budget(item, max_new_tokens) for item in items]
    if not progress:
        return engine.generate(questions, budgets)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task_id = bar.add_task("generate", total=len(questions))
        return engine.generate(questions, budgets, on_progress=lambda done: bar.advance(task_id, done))


def rescore(result_path: str | os.PathLike, out: str | os.PathLike | None = None) -> EvalResult:
    """Score a saved evaluation's raw outputs again with the current extractor (no generation).

    Extraction improves over time while generation is the expensive part; the model, data,
    timing and outputs are kept, only extracted answers, correctness and summaries change.
    """
    old = EvalResult.load(result_path)
    items = [{"task": p.task, "word": p.word, "prompt": p.prompt, "answer": p.gold, "template_id": p.template_id,
              "presentation": p.presentation, "mode": p.mode} for p in old.predictions]
    predictions, task_metrics = score_outputs(items, [p.output for p in old.predictions])
    result = old.model_copy(update={"tasks": task_metrics, "predictions": predictions})
    if out is not None:
        result.save(out)
    return result
