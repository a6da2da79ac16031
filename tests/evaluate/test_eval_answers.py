"""Answer extraction against what models actually write, including traps."""

import pytest

from spelltransfer.evaluate.answers import (
    edit_similarity,
    extract,
    extract_count,
    extract_position,
    extract_spelling,
    gold_value,
    levenshtein,
    spelling_separator,
)


@pytest.mark.parametrize(
    ("text", "value", "in_form"),
    [
        ("3", "3", True),
        ("3.", "3", True),
        ("**3**", "3", True),
        ("The answer is 3.", "3", False),
        ("three", "3", False),
        ("Three.", "3", False),
        ("3 times", "3", False),
        ("twice", "2", False),
        ("It appears once.", "1", False),
        ("there are no r's", "0", False),
        ("There is no 'q' in cledge.", "0", False),
        ("The letter z does not appear in the word.", "0", False),
        ("zero", "0", False),
        ("the letter 'e' appears 2 times", "2", False),
        ("The word 'garden' has 6 letters and 1 r.", "1", False),
        ("'strawberry' has 10 letters; r appears 3 times.", "3", False),
        ("There are 2 r's in strawberry.", "2", False),
        ("The letter 'e' appears 10 times in the English alphabet.", "10", False),
        ("Count: 4", "4", False),
    ],
)
def test_count_extraction(text, value, in_form):
    result = extract_count(text)
    assert (result.value, result.in_form) == (value, in_form)


@pytest.mark.parametrize(
    "text",
    [
        "1-m-i-s-",  # a spelled run, not a number
        "The 3rd letter is r.",  # an ordinal is not a count
        "m-i-s-s",
        "",
        "I don't know, no one can tell.",  # "one" as a pronoun
        "It is h2o.",
    ],
)
def test_count_rejects_non_numbers(text):
    assert extract_count(text).value is None


@pytest.mark.parametrize(
    ("text", "value", "in_form"),
    [
        ("r", "r", True),
        ("R", "r", True),
        ("'r'", "r", True),
        ("r.", "r", True),
        ("The 3rd letter is 'r'.", "r", False),
        ("The 3rd letter of 'garden' is 'A'.", "a", False),
        ("The third letter is a.", "a", False),
        ("The last letter of the word 'house' is E", "e", False),
        ("It's the letter \"d\", of course", "d", False),
        ("**n**", "n", True),
        ("Answer: s", "s", False),
    ],
)
def test_position_extraction(text, value, in_form):
    result = extract_position(text)
    assert (result.value, result.in_form) == (value, in_form)


@pytest.mark.parametrize(
    "text",
    [
        "It is a letter of the alphabet.",  # "is a" followed by a word is the article
        "The word garden is a noun.",
        "",
        "g-a-r",  # a spelling, not one letter
    ],
)
def test_position_rejects_non_letters(text):
    assert extract_position(text).value is None


@pytest.mark.parametrize(
    ("text", "asked", "value", "in_form"),
    [
        ("g-a-r-d-e-n", "-", "garden", True),
        ("g-a-r-d-e-n.", "-", "garden", True),
        ("G-A-R-D-E-N", "-", "garden", True),
        ("G A R D E N", "-", "garden", False),  # right letters, wrong separator
        ("g, a, r, d, e, n", ", ", "garden", True),
        ("g,a,r,d,e,n", ", ", "garden", True),
        ("g.a.r.d.e.n", ".", "garden", True),
        ("The word is spelled g-a-r-d-e-n.", "-", "garden", False),
        ("It is spelled a g-a-r-d-e-n", "-", "garden", False),  # article + run split on separator change
        ('"g - a - r - d - e - n"', "-", "garden", True),
        ("g\na\nr\nd\ne\nn", " ", "garden", True),
        ("R-R", "-", "rr", True),
        ("Gyroidal letter: c, a, t.", ", ", "cat", False),  # echoed example: extracted, and wrong
    ],
)
def test_spelling_extraction(text, asked, value, in_form):
    result = extract_spelling(text, asked)
    assert (result.value, result.in_form) == (value, in_form)


@pytest.mark.parametrize("text", ["garden", "", "ga-rd-en", "The spelling is easy.", "I'm sorry, I can't.", "Bettor: Bet-TOR"])
def test_spelling_needs_single_letters(text):
    assert extract_spelling(text, "-").value is None


def test_gold_values_and_separators():
    assert gold_value("spelling", "g, y, r, o") == "gyro"
    assert spelling_separator("g, y, r, o") == ","
    assert spelling_separator("g y r o") == " "
    assert gold_value("position", "i") == "i"
    assert gold_value("count", "0") == "0"
    # the asked separator comes from the gold answer, never the letters
    assert extract("spelling", "t u l l e", "t-u-l-l-e").in_form is False
    assert extract("spelling", "t-u-l-l-e", "t-u-l-l-e").in_form is True
    with pytest.raises(ValueError):
        extract("rhyme", "x")


def test_edit_similarity():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert edit_similarity("garden", "garden") == 1.0
    assert edit_similarity(None, "garden") == 0.0
    assert edit_similarity("gardn", "garden") == pytest.approx(5 / 6)
