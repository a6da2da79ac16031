"""Model cards (README.md with YAML front matter) that carry the evaluation figures.

The eval figures come from ``spelltransfer eval ... --out FILE.json`` files
(``{"tasks": {task: {"accuracy", "ci95", "n"}}}``); a card without figures says so rather than
leaving the table out silently.
"""

from __future__ import annotations

import json
from pathlib import Path

from spelltransfer.errors import DataError

TASK_ORDER = ("spelling", "position", "count")


def load_eval(path: Path) -> dict:
    """An evaluation result file, checked for the fields a card needs."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"eval results {path} not found")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not JSON ({error.msg})") from error
    tasks = result.get("tasks") if isinstance(result, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise DataError(f"{path}: missing 'tasks' (expected the output of `spelltransfer eval --out`)")
    for task, figures in tasks.items():
        if not isinstance(figures, dict) or "accuracy" not in figures:
            raise DataError(f"{path}: tasks.{task} has no 'accuracy'")
    return result


def eval_table_rows(evals: dict[str, dict]) -> list[dict]:
    """One row per task: accuracy/CI/n of each labelled result (e.g. base, tuned)."""
    tasks = [t for t in TASK_ORDER if any(t in e["tasks"] for e in evals.values())]
    tasks += sorted({t for e in evals.values() for t in e["tasks"]} - set(tasks))
    rows = []
    for task in tasks:
        row = {"task": task}
        for label, result in evals.items():
            figures = result["tasks"].get(task)
            row[label] = figures
        rows.append(row)
    return rows


def _cell(figures: dict | None) -> str:
    if not figures:
        return "–"
    text = f"{100 * figures['accuracy']:.1f} %"
    ci = figures.get("ci95")
    if ci and len(ci) == 2:
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    if figures.get("n") is not None:
        text += f" (n={figures['n']})"
    return text


def markdown_eval_table(evals: dict[str, dict]) -> str:
    if not evals:
        return "_No evaluation results were given to the export (`--eval FILE.json`)._\n"
    labels = list(evals)
    lines = ["| task | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for row in eval_table_rows(evals):
        lines.append(f"| {row['task']} | " + " | ".join(_cell(row[label]) for label in labels) + " |")
    return "\n".join(lines) + "\n\nAccuracy with its 95 % confidence interval and the number of questions.\n"


def render_card(*, name: str, kind: str, base_model: str, adapter_config: dict, evals: dict[str, dict],
                usage: str) -> str:
    """The README.md of an exported folder; ``kind`` is ``adapter``, ``merged`` or ``gguf``."""
    library = "peft" if kind == "adapter" else ("gguf" if kind == "gguf" else "transformers")
    front = [
        "---",
        f"library_name: {library}",
        f"base_model: {base_model}",
        "tags: [spelltransfer, lora, spelling]",
        "---",
    ]
    lora = ", ".join(f"{k}={adapter_config[k]}" for k in ("r", "lora_alpha", "lora_dropout", "target_modules")
                     if k in adapter_config)
    body = f"""
# {name} ({kind})

SmolLM2-135M-Instruct fine-tuned with LoRA on spelling ("spell garden" -> g-a-r-d-e-n), measuring
transfer to letter position ("3rd letter of X?") and letter counting ("how many r's in X?").
Exported by `spelltransfer export`.

- Base model: `{base_model}`
- LoRA: {lora or "n/a"}
- Form: {dict(adapter="PEFT adapter (load on top of the base model)",
             merged="merged full model (LoRA folded into the weights; plain transformers)",
             gguf="GGUF file (merged weights, llama.cpp-compatible)")[kind]}

## Evaluation

{markdown_eval_table(evals)}
## Usage

```python
{usage.strip()}
```

Prompts must use the model's chat template (`spelltransfer.models.PromptFormat`); answers end
with `<|im_end|>`.
"""
    return "\n".join(front) + "\n" + body


def load_eval_files(eval_files: dict[str, Path | str]) -> dict[str, dict]:
    return {label: load_eval(Path(path)) for label, path in eval_files.items()}
