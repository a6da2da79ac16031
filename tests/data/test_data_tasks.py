"""Every template of every task renders to a well-formed, correct question/answer pair."""

from __future__ import annotations

import random
import re
import string

import pytest

from spelltransfer.data import Example, make_examples
from spelltransfer.data.tasks import TASKS, get_task, seed_for
from spelltransfer.data.tasks import count, position, spelling
from spelltransfer.errors import DataError

WORDS = ["garden", "strawberry", "cat", "mississippi", "rhythm", "banana", "queue", "abcdefghijkl"]


@pytest.mark.parametrize("name", ["spelling", "position", "count"])
def test_every_template_renders_well_formed(name):
    task_cls = get_task(name)
    assert len(task_cls.templates) >= 8
    assert len(set(task_cls.templates)) == len(task_cls.templates)
    rng = random.Random(0)
    for template in task_cls.templates:
        for word in WORDS:
            for _ in range(5):
                for shown in (word, f"'{word}'", f'"{word}"'):
                    prompt, answer = task_cls(WORDS, "test").build(word, shown, template, rng)
                    assert "{" not in prompt and "}" not in prompt, prompt
                    assert f" {shown}" in prompt, prompt  # the word is shown space-prefixed, as presented
                    assert task_cls.answer_pattern.fullmatch(answer), (prompt, answer)
                prompt, answer = task_cls(WORDS, "test").build(word, word, template, rng)
                assert task_cls.answer_pattern.fullmatch(answer), (prompt, answer)


def test_spelling_answers_and_separators_are_stated():
    seen = set()
    for example in make_examples("spelling", WORDS, 400, seed=3, split="test"):
        name = spelling.separator_from_answer(example.word, example.answer)
        assert name is not None, example
        separator, description = spelling.SEPARATORS[name]
        # The question names the separator and shows it on "cat": only one answer fits.
        assert description in example.prompt and spelling.format_answer("cat", separator) in example.prompt
        assert example.answer.replace(separator, "") == example.word
        seen.add(name)
    assert seen == set(spelling.SEPARATORS)
    assert spelling.format_answer("cat", ", ") == "c, a, t"
    assert spelling.format_answer("cat", "-") == "c-a-t"


_ORDINAL_RE = re.compile(r"\b(last|\d+(?:st|nd|rd|th)|[a-z]+(?:st|nd|rd|th))\b")
_WORD_ORDINALS = {position.ordinal(i, "words"): i for i in range(1, 21)}


def test_position_answer_matches_the_asked_position():
    lasts = 0
    examples = make_examples("position", WORDS, 1000, seed=1, split="validation")
    for example in examples:
        asked = [m for m in _ORDINAL_RE.findall(example.prompt) if m == "last" or m in _WORD_ORDINALS or m[0].isdigit()]
        assert len(asked) == 1, example.prompt
        label = asked[0]
        if label == "last":
            lasts += 1
            index = -1
        else:
            index = (int(re.match(r"\d+", label).group()) if label[0].isdigit() else _WORD_ORDINALS[label]) - 1
            assert 0 <= index < len(example.word)
        assert example.answer == example.word[index] == position.format_answer(example.word, index)
    assert 0.10 < lasts / len(examples) < 0.25  # LAST_RATE = 1/6


@pytest.mark.parametrize("n, expected", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"),
                                         (12, "12th"), (13, "13th"), (21, "21st"), (22, "22nd"), (101, "101st"),
                                         (111, "111th")])
def test_ordinal_digits(n, expected):
    assert position.ordinal(n) == expected


def test_ordinal_words():
    assert [position.ordinal(i, "words") for i in (1, 2, 3, 12)] == ["first", "second", "third", "twelfth"]


def test_count_answers_and_absent_letters():
    examples = make_examples("count", WORDS, 2000, seed=2, split="test")
    absent = 0
    for example in examples:
        asked = [c for c in string.ascii_lowercase
                 if re.search(rf"(letter {c}\b|\b{c}'s\b|does {c} appear)", example.prompt)]
        assert len(asked) == 1, example.prompt
        letter = asked[0]
        assert example.answer == str(example.word.count(letter)) == count.format_answer(example.word, letter)
        absent += example.answer == "0"
    assert 0.18 < absent / len(examples) < 0.32  # ABSENT_RATE = 0.25
    # Repeated letters are asked for often enough that always answering "1" stays a weak baseline.
    ones = sum(e.answer == "1" for e in examples) / len(examples)
    several = sum(int(e.answer) >= 2 for e in examples) / len(examples)
    assert ones < 0.5 and several > 0.25, (ones, several)
    assert count.format_answer("strawberry", "r") == "3"


def test_examples_rebuild_alone_and_deterministically():
    task = get_task("count")(WORDS, "test", seed=5, size=50)
    again = get_task("count")(list(reversed(WORDS)), "test", seed=5, size=50)
    assert [task[i] for i in range(50)] == [again[i] for i in range(50)]
    assert task[37] == list(task)[37]
    other_seed = get_task("count")(WORDS, "test", seed=6, size=50)
    other_split = get_task("count")(WORDS, "validation", seed=5, size=50)
    assert list(task) != list(other_seed) and list(task) != list(other_split)
    assert seed_for("test", 1) != seed_for("test", 2) != seed_for("validation", 1)
    with pytest.raises(IndexError):
        task[50]


def test_every_word_used_before_any_repeats():
    examples = make_examples("spelling", WORDS, len(WORDS), seed=0, split="train")
    assert sorted(e.word for e in examples) == sorted(WORDS)
    assert all(isinstance(e, Example) and e.split == "train" and e.template_id.startswith("spelling/") for e in examples)


def test_bad_words_and_tasks_raise_data_error():
    with pytest.raises(DataError, match="empty word list"):
        make_examples("spelling", [], 3)
    with pytest.raises(DataError, match="lowercase"):
        make_examples("spelling", ["Garden"], 3)
    with pytest.raises(DataError, match="unknown"):
        get_task("rhyming")
    assert set(TASKS) == {"spelling", "position", "count"}


def test_templates_keep_training_words_single_token(tokenizer):
    """A training word is one token (" garden"); templates must not split it (quotes would)."""
    words = ["garden", "house", "water", "light", "people"]
    for word in words:
        assert tokenizer.tokenize(" " + word) == ["Ġ" + word]
    for name in TASKS:
        for example in make_examples(name, words, 200, seed=0, split="train"):
            assert "Ġ" + example.word in tokenizer.tokenize(example.prompt), example.prompt


def test_preview_runs_as_main():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "spelltransfer.data.tasks.spelling"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "spelling/" in result.stdout and "RuntimeWarning" not in result.stderr
