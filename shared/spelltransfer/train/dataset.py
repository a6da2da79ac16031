"""Training and validation examples as token ids, with the loss on the answer only.

Each example becomes ``prompt_ids + completion_ids`` where the prompt is
``PromptFormat.prompt(question)`` and the completion ``PromptFormat.completion(answer)``
(answer + end-of-turn): labels are -100 over the prompt, so the model learns the answer and to
stop after it, never to predict the question. Prompt and completion are tokenized separately,
as generation sees them: the model continues from the prompt's last token.

The batch order is a function of (seed, step) alone — epoch ``e`` is a fixed permutation seeded
by ``seed + e`` — so the data position of a checkpoint is just the number of examples consumed,
and a resumed run sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from spelltransfer.errors import DataError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    task: str
    prompt: str
    answer: str


def read_split(data_dir: str | Path, split: str) -> list[dict]:
    """Example records of one split, validated by the data package (errors name file:line)."""
    from spelltransfer.data import load_split

    return [example.to_dict() for example in load_split(data_dir, split)]


def tokenize_example(record: dict, tokenizer, prompt_format, max_seq_length: int) -> TokenizedExample:
    prompt_ids = tokenizer(prompt_format.prompt(record["prompt"]), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(prompt_format.completion(record["answer"]), add_special_tokens=False)["input_ids"]
    if len(completion_ids) >= max_seq_length:
        raise DataError(
            f"answer of '{record['prompt']}' is {len(completion_ids)} tokens, longer than model.max_seq_length={max_seq_length}"
        )
    # Too long: drop the prompt's oldest tokens (the system preamble), never the answer.
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(completion_ids) - max_seq_length):]
    return TokenizedExample(
        input_ids=prompt_ids + completion_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        task=record["task"], prompt=record["prompt"], answer=record["answer"],
    )


class BatchOrder:
    """Which examples form the batch at each step: reshuffled every epoch, a pure function of the seed."""

    def __init__(self, n_examples: int, batch_size: int, seed: int):
        if n_examples < 1:
            raise DataError("no training examples")
        self.n_examples = n_examples
        self.batch_size = batch_size
        self.seed = seed
        self._epoch_cache: dict[int, list[int]] = {}

    def _permutation(self, epoch: int) -> list[int]:
        if epoch not in self._epoch_cache:
            order = list(range(self.n_examples))
            random.Random(self.seed * 100_003 + epoch).shuffle(order)
            self._epoch_cache = {epoch: order}
        return self._epoch_cache[epoch]

    def batch(self, step: int) -> list[int]:
        """Example indices for optimizer step ``step`` (0-based)."""
        start = step * self.batch_size
        indices = []
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, self.n_examples)
            indices.append(self._permutation(epoch)[offset])
        return indices

    def examples_consumed(self, steps_done: int) -> int:
        return steps_done * self.batch_size


def mix_tasks(spelling: list[dict], fractions: dict[str, float], seed: int, words: list[str],
              aux_form: str = "direct", aux_symbol_fraction: float = 0.0) -> list[dict]:
    """Add position/count (or list, or bridge) questions on the training words so each makes up its
    fraction of the set; ``aux_form`` is the form of the list questions (``data.modes.question_form``)
    and ``aux_symbol_fraction`` the share of the word lists listing digits/symbols instead of words
    (letter lists, ``list_letter_*``, take only the form; their redraws are logged at INFO).
    Bridge questions (``spell_echo``) show the word in every presentation, as spelling prompts do."""
    total_fraction = sum(fractions.values())
    if total_fraction <= 0:
        return spelling
    from spelltransfer.data.presentation import PRESENTATIONS
    from spelltransfer.data.tasks import get_task

    n_total = int(round(len(spelling) / (1.0 - total_fraction)))
    mixed = list(spelling)
    # Seed offsets follow the historical order (count, position, lists, bridge) so runs keep their data;
    # the tasks added since (round 4: letter lists, balanced counts, the quoted bridge) come after them.
    historical = sorted((t for t in fractions if t in _HISTORICAL_TASKS), key=lambda t: (t == "spell_echo", t.startswith("list_"), t))
    order = historical + sorted(t for t in fractions if t not in _HISTORICAL_TASKS)
    for offset, task in enumerate(order):
        n = int(round(fractions[task] * n_total))
        if n:
            if task in ("spell_echo", "spell_quoted"):
                options = {"presentations": tuple(PRESENTATIONS)}
            elif task.startswith("list_letter_"):
                options = {"form": aux_form}
            elif task.startswith("list_"):
                options = {"form": aux_form, "symbol_fraction": aux_symbol_fraction}
            else:
                options = {}
            examples = get_task(task)(words, "train", seed=seed + offset + 1, size=n, **options)
            mixed.extend(example.to_dict() for example in examples)
            if getattr(examples, "redrawn", 0):
                _log.info("%s: %d lists, %d redrawn (their letters joined into or held a dictionary word)",
                          task, n, examples.redrawn)
    return mixed


_HISTORICAL_TASKS = ("position", "count", "list_position", "list_count", "spell_echo")
_log = logging.getLogger(__name__)
