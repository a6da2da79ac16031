"""Round 4's list tasks (data/tasks/letter_lists.py, list_count_balanced, spell_quoted) and the
transfer fields that mix them in: no list of letters ever shows an eval word's letters in order,
count answers are balanced, the spell-first layout is the one the graders read, and with the new
fields at their defaults the training mix and the built dataset are byte for byte what they were."""

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from spelltransfer.data.build import make_examples
from spelltransfer.data.tasks import get_task
from spelltransfer.data.tasks.letter_lists import LENGTH_WEIGHTS, spells_a_word
from spelltransfer.evaluate.answers import extract, extract_spell_first
from spelltransfer.train.data_config import TransferConfig
from spelltransfer.train.dataset import mix_tasks

WORDS = ["garden", "strawberry", "cat", "banana", "letter", "rhythm", "quantum", "fish", "dog", "apple", "house", "tree",
         "river", "stone"]
PREDICTIONS = Path(__file__).resolve().parents[2] / "results/recipe/evals/untrained_direct.predictions.jsonl"
LETTER_TASKS = ("list_letter_position", "list_letter_count", "list_letter_position_lw", "list_letter_count_lw")
LIST = re.compile(r"\b[a-z](?:, [a-z]\b)+")


def _test_words() -> set[str]:
    """The seed-0 test split's words (the committed eval predictions), plus a few known eval words."""
    words = {"shilfa", "gyroidal"}
    if PREDICTIONS.is_file():
        words |= {json.loads(line)["word"] for line in PREDICTIONS.open()}
    return words


def _letters(example) -> list[str]:
    return LIST.search(example.prompt).group(0).split(", ")


@pytest.mark.parametrize("form", ["direct", "spell_first", "spell_marked"])
def test_letter_lists_never_spell_an_eval_word_and_are_answerable(form):
    eval_words = _test_words()
    for task in LETTER_TASKS:
        cls = get_task(task)
        for example in make_examples(task, WORDS, 150, 2, "train", form=form):
            letters = _letters(example)
            joined = "".join(letters)
            assert not any(word in joined for word in eval_words), (joined, example.prompt)
            assert not spells_a_word(letters)
            assert joined not in example.prompt  # the letters are never written together
            assert min(LENGTH_WEIGHTS) <= len(letters) <= max(LENGTH_WEIGHTS)
            assert cls.answer_pattern.fullmatch(example.answer), example.answer
            final = example.answer.rsplit("Answer: ", 1)[-1]
            if task.startswith("list_letter_count"):
                template = cls.templates[int(example.template_id.rsplit("/", 1)[1])]
                pattern = re.escape(template).replace(re.escape("{item}"), "([a-z])").replace(re.escape("{items}"), "[a-z, ]+")
                asked = re.match(pattern, example.prompt).group(1)
                assert final == str(letters.count(asked))
            else:
                assert final in letters
            assert ("letter" in example.prompt.split("First")[0]) == task.endswith("_lw")


def test_known_words_are_refused_and_random_letters_mostly_not():
    assert spells_a_word(list("garden")) and spells_a_word(list("shilfa")) and spells_a_word(list("xqgardenz"))
    assert spells_a_word(list("gardens"))  # inflections too
    assert not spells_a_word(list("qxbm"))
    assert spells_a_word(list("qxbm"), frozenset({"qxbm"}))


@pytest.mark.parametrize("task", ["list_letter_count", "list_letter_count_lw", "list_count_balanced"])
def test_count_answers_are_balanced(task):
    options = {"symbol_fraction": 0.3} if task == "list_count_balanced" else {}
    answers = Counter(e.answer for e in make_examples(task, WORDS, 2000, 1, "train", **options))
    assert set(answers) == {"0", "1", "2", "3"}
    assert all(0.21 < n / 2000 < 0.29 for n in answers.values()), answers
    # the plain list_count leans on "1" and rarely says 3, the skew the balance removes
    plain = Counter(e.answer for e in make_examples("list_count", WORDS, 2000, 1, "train"))
    assert plain["3"] < 0.2 * 2000


def test_spell_first_layout_and_graders():
    position = make_examples("list_letter_position", WORDS, 40, 3, "train", form="spell_first")
    count = make_examples("list_letter_count_lw", WORDS, 40, 3, "train", form="spell_first")
    for task, examples in (("position", position), ("count", count)):
        for example in examples:
            letters = _letters(example)
            final = example.answer.rsplit("Answer: ", 1)[1]
            assert example.answer == "-".join(letters) + ". Answer: " + final
            graded = extract_spell_first(task, example.answer)
            assert (graded.value, graded.in_form, graded.spelled) == (final, True, "".join(letters))
    assert "dashes between them (like one-two-three)" in position[0].prompt
    assert "letters with dashes between them (like c-a-t)" in count[0].prompt
    direct = make_examples("list_letter_position", WORDS, 10, 3, "train")
    assert all(extract("position", e.answer).value == e.answer and e.answer in _letters(e) for e in direct)
    marked = make_examples("list_letter_position", WORDS, 10, 3, "train", form="spell_marked")
    for example in marked:
        graded = extract_spell_first("position", example.answer)
        assert graded.in_form and graded.spelled == "".join(_letters(example))


def test_quoted_bridge_answers_yes_or_no_never_the_word():
    for example in make_examples("spell_quoted", WORDS, 40, 0, "train", presentations=("bare", "single", "double")):
        assert example.answer == "-".join(example.word) + ". Answer: " + ("no" if example.presentation == "bare" else "yes")


def test_round_4_fields_mix_their_shares():
    spelling = [{"task": "spelling", "prompt": f"p{i}", "answer": "a"} for i in range(1300)]
    config = TransferConfig(mode="spell_first", aux_fraction=0.3, aux_letter_fraction=0.5, aux_letter_wording=0.5,
                            aux_balanced_counts=True, bridge_fraction=0.05, bridge_answer="quoted")
    mixed = mix_tasks(spelling, config.mix_fractions(), 5, WORDS, config.aux_form(), config.aux_symbol_fraction)
    share = Counter(r["task"] for r in mixed)
    expected = {"spelling": 0.65, "list_position": 0.075, "list_count_balanced": 0.075, "spell_quoted": 0.05,
                **{t: 0.0375 for t in LETTER_TASKS}}
    assert {t: n / len(mixed) for t, n in share.items()} == pytest.approx(expected, abs=0.002)
    with pytest.raises(ValidationError, match="aux_letter_fraction > 0 needs aux_fraction"):
        TransferConfig(mode="spell_first", aux_letter_fraction=0.5)
    with pytest.raises(ValidationError, match="aux_letter_wording > 0 needs aux_letter_fraction"):
        TransferConfig(mode="spell_first", aux_fraction=0.3, aux_letter_wording=0.5)


# sha256 of mix_tasks' records for these configs, taken before round 4's fields existed
BEFORE = {
    "default": ({}, "0413154098dcb090549f72da1b22a4063c7ba7c7ca7ed47babafecc7a51a865b"),
    "sf_bridge": (dict(mode="spell_first", aux_fraction=0.2, bridge_fraction=0.1),
                  "a2337b81ae601eecc0ca93a63082ffc4e50dd83d8f29d74b438024e2b6040e8b"),
    "sf_sym": (dict(mode="spell_first", aux_fraction=0.3, aux_symbol_fraction=0.3, bridge_fraction=0.05),
               "665d005e9362f0b4870150abc2c517693461bf6f5ed4fd5b85d6476d31ade7c3"),
    "mk2": (dict(mode="spell_marked", aux_fraction=0.3, aux_symbol_fraction=0.3, bridge_fraction=0.05),
            "96fccd5614af1558e8fb6c39a63d3f8abdd473cb13e91aafc7ac1a9685cce77f"),
    "format_aux": (dict(mode="format_aux", aux_fraction=0.2), "67b0e8ad99fcbeea50041d43ea0d63e6e500f8131683f53a8ea89206fc79e62a"),
    "mix": (dict(mix_position_fraction=0.1, mix_count_fraction=0.1),
            "7f604a1c5c4969cd4d2ad38ad355e21029c9d6deccaf216e5bb10cb0c6bf1834"),
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_defaults_leave_the_training_mix_as_it_was(name):
    fields, digest = BEFORE[name]
    spelling = [e.to_dict() for e in make_examples("spelling", WORDS, 400, 0, "train", presentations=("bare", "single", "double"))]
    config = TransferConfig(**fields)
    records = mix_tasks(spelling, config.mix_fractions(), 7, WORDS, config.aux_form(), config.aux_symbol_fraction)
    assert hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest() == digest


def test_the_built_dataset_is_as_it_was(small_dataset):
    """The small build's content hash before round 4 (SmolLM2 tokenizer, english-words 2.0.x): the
    letter-list check only adds the manifest's ``letter_lists``."""
    _, manifest = small_dataset
    assert manifest["content_sha256"] == "3a6e0923849ec50997c458b81409a332897a8cc52f9fa5bdc2969f51f695f8e7"
    assert manifest["letter_lists"]["eval_words_refused"] == {"validation": "160/160", "test": "240/240"}
