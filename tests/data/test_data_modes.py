"""Transfer modes (data/modes.py): the list and bridge tasks in each form, the marks, and the
spell-first grader reading what the tasks write."""

import pytest
from pydantic import ValidationError

from spelltransfer.data.build import make_examples
from spelltransfer.data.modes import count_marks, eval_prompt, position_marks, question_form, spell_first_target
from spelltransfer.data.tasks import get_task
from spelltransfer.evaluate.answers import extract_spell_first
from spelltransfer.train.data_config import TransferConfig
from spelltransfer.train.dataset import mix_tasks

WORDS = ["garden", "strawberry", "cat", "banana", "letter", "rhythm", "quantum", "fish", "dog", "apple"]


def test_marks_layout():
    assert position_marks(3) == ["1", "2", "3"]
    assert count_marks(list("strawberry"), "r") == [None, None, "1", None, None, None, None, "2", "3", None]
    assert spell_first_target(list("strawberry"), "3", count_marks(list("strawberry"), "r")) == \
        "s-t-r-a-w-b-e-r-r-y. s-t-r(1)-a-w-b-e-r(2)-r(3)-y. Answer: 3"
    assert spell_first_target(["apple", "dog"], "dog", position_marks(2)) == "apple-dog. apple(1)-dog(2). Answer: dog"
    assert spell_first_target(["apple", "dog"], "dog") == "apple-dog. Answer: dog"


@pytest.mark.parametrize("symbols", [0.0, 0.5])
@pytest.mark.parametrize("form", ["direct", "spell_first", "spell_marked"])
def test_list_tasks_are_answerable_from_their_prompt_and_graded_right(form, symbols):
    seen_symbols = False
    for task in ("list_position", "list_count"):
        cls = get_task(task)
        for example in make_examples(task, WORDS, 60, 3, "train", form=form, symbol_fraction=symbols):
            assert cls.answer_pattern.fullmatch(example.answer), example.answer
            if form == "direct":
                continue
            final = example.answer.rsplit("Answer: ", 1)[1]
            passes = example.answer.rsplit(". Answer: ", 1)[0].split(". ")
            assert len(passes) == (2 if form == "spell_marked" else 1)
            plain, listed = passes[0], passes[-1]
            items = [unit.split("(")[0] for unit in listed.split("-")]
            assert plain.split("-") == items  # the marked pass copies the plain one
            assert all(item in example.prompt for item in items)  # the list is the prompt's list
            seen_symbols |= all(len(item) == 1 and not item.isalpha() for item in items)
            if task == "list_count":
                asked = [u for u in listed.split("-") if "(" in u]
                if form == "spell_marked":
                    assert final == str(len(asked))
                else:
                    assert not asked and final.isdigit()
                assert (form == "spell_marked") == ("running count" in example.prompt)
            else:
                assert final in items
                assert (form == "spell_marked") == all("(" in u for u in listed.split("-"))
    assert seen_symbols == (symbols > 0 and form != "direct")


def test_symbol_fraction_zero_keeps_the_word_lists():
    for task in ("list_position", "list_count"):
        assert make_examples(task, WORDS, 40, 3, "train", form="spell_first") == \
            make_examples(task, WORDS, 40, 3, "train", form="spell_first", symbol_fraction=0.0)
    with pytest.raises(ValidationError, match="aux_symbol_fraction > 0 needs aux_fraction"):
        TransferConfig(mode="spell_first", aux_symbol_fraction=0.3)


def test_bridge_answers_the_word_after_its_plain_spelling():
    for example in make_examples("spell_echo", WORDS, 30, 0, "train", presentations=("bare", "single", "double")):
        assert example.answer == "-".join(example.word) + ". Answer: " + example.word
        assert "then write Answer:" in example.prompt
    presented = {e.presentation for e in make_examples("spell_echo", WORDS, 30, 0, "train", presentations=("bare", "single", "double"))}
    assert presented == {"bare", "single", "double"}


@pytest.mark.parametrize("text, value, in_form, spelled", [
    ("g-a-r-d-e-n. Answer: r", "r", True, "garden"),
    ("g-a-r-d-e-n. g(1)-a(2)-r(3)-d(4)-e(5)-n(6). Answer: r", "r", True, "garden"),
    ("s-t-r-a-w-b-e-r-r-y. s-t-r(1)-a-w-b-e-r(2)-r(3)-y. Answer: 3", "3", True, "strawberry"),
    ("g(1)-a(2)-r(3). Answer: r", "r", False, "gar"),  # marks without the plain pass first
    ("s-h-i-l-f-a. Answer: shilfa", None, False, "shilfa"),  # the bridge's echo: no letter
    ("s-h-i-l-f-a", None, False, "shilfa"),  # spelled, then stopped: no answer
    ("the answer is r", None, False, None),  # neither a spelling nor an Answer: mark
    ("Answer: r", "r", False, None),
])
def test_spell_first_grader(text, value, in_form, spelled):
    got = extract_spell_first("count" if value and value.isdigit() else "position", text)
    assert (got.value, got.in_form, got.spelled) == (value, in_form, spelled)


def test_eval_prompt_per_mode():
    prompt = "How many r's are in strawberry?"
    assert eval_prompt("count", prompt, "direct") == eval_prompt("count", prompt, "format_aux") == prompt
    assert "dashes between the letters" in eval_prompt("count", prompt, "spell_first")
    assert "running count" in eval_prompt("count", prompt, "spell_marked")
    assert "number after it" in eval_prompt("position", "What is the 3rd letter of garden?", "spell_marked")
    assert eval_prompt("spelling", "Spell cat.", "spell_marked") == "Spell cat."
    with pytest.raises(ValueError, match="unknown"):
        question_form("spell_later")


def test_transfer_config_checks_bridge_and_shares():
    assert TransferConfig(mode="spell_marked", aux_fraction=0.2, bridge_fraction=0.1).aux_form() == "spell_marked"
    with pytest.raises(ValidationError, match="bridge_fraction > 0 needs mode spell_first or spell_marked"):
        TransferConfig(mode="format_aux", aux_fraction=0.2, bridge_fraction=0.1)
    with pytest.raises(ValidationError, match="must be < 1"):
        TransferConfig(mode="spell_first", aux_fraction=0.6, bridge_fraction=0.5)


def test_mix_tasks_adds_each_share_and_keeps_the_list_data():
    spelling = [{"task": "spelling", "prompt": f"p{i}", "answer": "a"} for i in range(700)]
    config = TransferConfig(mode="spell_first", aux_fraction=0.2, bridge_fraction=0.1)
    mixed = mix_tasks(spelling, config.mix_fractions(), 5, WORDS, config.aux_form())
    share = {t: sum(r["task"] == t for r in mixed) / len(mixed) for t in ("spelling", "list_position", "list_count", "spell_echo")}
    assert share == pytest.approx({"spelling": 0.7, "list_position": 0.1, "list_count": 0.1, "spell_echo": 0.1}, abs=0.002)
    # adding the bridge leaves the list questions (their seeds) as they were without it
    no_bridge = TransferConfig(mode="spell_first", aux_fraction=0.2)
    lists = lambda records: [r["prompt"] for r in records if r["task"].startswith("list_")]
    plain = mix_tasks(spelling, no_bridge.mix_fractions(), 5, WORDS, no_bridge.aux_form())
    assert lists(mixed)[:10] == lists(plain)[:10]
