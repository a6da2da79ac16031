"""Per-task answer extraction: what a model wrote -> the answer it meant, plus whether it used
the asked form. Pure functions, no model needed.

Models rarely answer bare: "The answer is 3.", "three", "**3**", "The 3rd letter is 'r'.",
"G A R D E N". Extraction is generous about wrapping but strict about content: a count must be
a number (or an unambiguous "none"/"twice"), never a spelled run like "1-m-i-s-"; a position
answer must be one letter; a spelling must be a run of single letters. The gold answer never
steers extraction (that would inflate accuracy), it only tells the asked separator.

Try it: ``python -m spelltransfer.evaluate.answers count "there are no r's"``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

TASKS = ("spelling", "position", "count")


@dataclass(frozen=True)
class Extraction:
    """``value``: the normalized answer (spelling -> lowercase letters, position -> one lowercase
    letter, count -> decimal digits) or None when nothing answer-like was found.
    ``in_form``: the whole response was the answer in the asked form (bare number, bare letter,
    letters joined by the asked separator)."""

    value: str | None
    in_form: bool


# Wrapping that does not change an answer: quotes, markdown emphasis, a final full stop.
_WRAP = " \t\r\n'\"`*_‘’“”«»"
_QUOTE = "'\"`‘’“”*"


def _unwrap(text: str) -> str:
    text = text.strip().strip(_WRAP)
    while text.endswith((".", "!")):
        text = text[:-1].strip().strip(_WRAP)
    return text


# ---------------------------------------------------------------------------- spelling

# One letter, then (separator, one letter)+; a "letter" is never part of a longer word.
# Apostrophes never separate letters: "I'm" is a word, not the spelling "i-m".
_SPELLED_RUN = re.compile(r"(?<![A-Za-z'’])[A-Za-z](?:[^A-Za-z0-9'’]{1,3}[A-Za-z](?![A-Za-z'’]))+")
_SEP_SPLIT = re.compile(r"[A-Za-z]")


def _normalize_separator(separator: str) -> str:
    # "g, a" and "g,a" are the same separator to a reader; all-whitespace counts as a space.
    stripped = separator.strip()
    return stripped if stripped else " "


def _spelled_segments(text: str) -> list[tuple[str, str]]:
    """(letters, separator) for each run of single letters joined by one consistent separator."""
    segments: list[tuple[str, str]] = []
    for match in _SPELLED_RUN.finditer(text):
        run = match.group(0)
        letters = _SEP_SPLIT.findall(run)
        separators = [_normalize_separator(sep) for sep in _SEP_SPLIT.split(run)[1:-1]]
        # Split where the separator changes: "a g-a-r-d-e-n" is "a" + "g-a-r-d-e-n".
        start = 0
        for i in range(1, len(separators) + 1):
            if i == len(separators) or separators[i] != separators[start]:
                chunk = letters[start : i + 1]
                if len(chunk) >= 2:
                    segments.append(("".join(chunk).lower(), separators[start]))
                start = i
    return segments


def spelling_separator(gold: str) -> str | None:
    """The separator the gold spelling uses (normalized), or None if it is not a spelled run."""
    segments = _spelled_segments(gold)
    return segments[0][1] if len(segments) == 1 else None


def extract_spelling(text: str, asked_separator: str | None = None) -> Extraction:
    """The longest run of single letters (first one on ties), e.g. "G A R D E N" -> "garden"."""
    segments = _spelled_segments(text)
    if not segments:
        return Extraction(None, False)
    letters, separator = max(segments, key=lambda seg: len(seg[0]))  # max keeps the first tie
    bare = _unwrap(text)
    in_form = (
        len(segments) == 1
        and (asked_separator is None or separator == _normalize_separator(asked_separator))
        and len(_SPELLED_RUN.findall(bare)) == 1
        and _SPELLED_RUN.fullmatch(bare) is not None
    )
    return Extraction(letters, in_form)


# ---------------------------------------------------------------------------- position

_Q = r"['\"`‘’“”*]*"
_IS_LETTER = re.compile(rf"\b(?:is|was|be|:)\s*{_Q}([A-Za-z]){_Q}(?![A-Za-z0-9-])(?!\s+(?:[a-z]{{2,}}))", re.IGNORECASE)
_QUOTED_LETTER = re.compile(r"['\"`‘’“”*]+([A-Za-z])['\"`‘’“”*]+")
_LETTER_NAMED = re.compile(rf"\bletter\s+{_Q}([A-Za-z]){_Q}(?![A-Za-z0-9])", re.IGNORECASE)


def extract_position(text: str) -> Extraction:
    """One letter: bare ("r", "'R'"), after "is" ("... is r."), quoted, or "the letter r"."""
    bare = _unwrap(text)
    if len(bare) == 1 and bare.isalpha():
        return Extraction(bare.lower(), True)
    for pattern in (_IS_LETTER, _QUOTED_LETTER, _LETTER_NAMED):
        match = pattern.search(text)
        if match:
            return Extraction(match.group(1).lower(), False)
    return Extraction(None, False)


# ---------------------------------------------------------------------------- count

_NUMBER_WORDS = {
    "zero": 0, "none": 0, "no": 0, "one": 1, "once": 1, "single": 1, "two": 2, "twice": 2, "three": 3,
    "thrice": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}
# Only words that are a count on their own; "no", "single" need context (handled below).
_BARE_WORDS = {k: v for k, v in _NUMBER_WORDS.items() if k not in {"no", "single"}}
_WORD_ALT = "|".join(sorted((w for w in _NUMBER_WORDS if w not in {"no", "none", "single"}), key=len, reverse=True))
# A number is a whole token: not "3rd", not "1-m-i-s", not "2.5", not part of "h2o".
_NUMBER = re.compile(rf"(?<![A-Za-z0-9.-])(\d+|{_WORD_ALT})(?![A-Za-z0-9]|-[A-Za-z0-9]|\.\d)", re.IGNORECASE)
# What follows a number that makes it a count of the asked letter (strong) or a word length (weak).
_COUNT_CUE = re.compile(rf"\s*(?:times?\b|occurrences?\b|instances?\b|{_Q}[A-Za-z]{_Q}(?:'?s)?\b|{_Q}[A-Za-z]{_Q}$)", re.IGNORECASE)
_LENGTH_CUE = re.compile(r"\s*(?:letters?|characters?|chars?|syllables?|vowels?|consonants?)\b", re.IGNORECASE)
_LEAD_CUE = re.compile(r"(?:\bis|\bare|\bappears?|\boccurs?|\bcount|\banswer|\btotal|=|:)\W*$", re.IGNORECASE)
_ZERO = re.compile(
    r"\b(?:no\s+{q}[A-Za-z]{q}(?:'?s)?\b|none\b|zero\b|not\s+(?:contain|appear|occur|present|found|in)\b"
    r"|(?:doesn't|does\s+not|don't|do\s+not|isn't|is\s+not|never)\s+(?:contain|appear|occur|have|include|present)\w*)".format(q=_Q),
    re.IGNORECASE,
)


def _number_value(token: str) -> int:
    return int(token) if token.isdigit() else _NUMBER_WORDS[token.lower()]


def extract_count(text: str) -> Extraction:
    """A whole number: bare ("3", "three"), "3 times", "2 r's", "The answer is 3.", or 0 from
    "there are no r's". Numbers that are word lengths ("6 letters") lose to counts."""
    bare = _unwrap(text)
    if bare.isdigit():
        return Extraction(str(int(bare)), True)
    if bare.lower() in _BARE_WORDS:
        return Extraction(str(_BARE_WORDS[bare.lower()]), False)
    candidates: list[tuple[int, int, int]] = []  # (priority, position, value); lower priority wins
    for match in _NUMBER.finditer(text):
        after = text[match.end() :]
        before = text[: match.start()]
        token = match.group(1)
        if _COUNT_CUE.match(after):
            priority = 0
        elif _LENGTH_CUE.match(after):
            priority = 3
        elif _LEAD_CUE.search(before):
            priority = 1
        else:
            priority = 2
        # "one" is too often a pronoun ("no one", "one of the letters") to count without a cue.
        if token.lower() == "one" and priority > 1:
            continue
        candidates.append((priority, match.start(), _number_value(token)))
    zero = _ZERO.search(text)
    if zero:
        candidates.append((0, zero.start(), 0))
    if not candidates:
        return Extraction(None, False)
    priority, _, value = min(candidates)
    return Extraction(str(value), False)


# ---------------------------------------------------------------------------- spell first

_ANSWER_MARK = re.compile(r"answer\s*:", re.IGNORECASE)
_UNIT_MARK = re.compile(r"\(\d+\)")  # data.modes.MARK_PATTERN


@dataclass(frozen=True)
class SpellFirstExtraction:
    """The final answer after the spelling, and the spelling the model wrote before it."""

    value: str | None
    in_form: bool
    spelled: str | None


_PASS = re.compile(r"\s*[A-Za-z](?:\(\d+\))?(?:-[A-Za-z](?:\(\d+\))?)+\s*")


def extract_spell_first(task: str, text: str) -> SpellFirstExtraction:
    """``g-a-r-d-e-n. Answer: r`` -> value ``r``, spelled ``garden``, in form. The answer is what
    follows the last ``Answer:`` (else what follows the longest spelled run); the layout is
    ``data.modes.spell_first_target``'s. ``spell_marked``'s second pass (``g(1)-a(2)``) is read
    past: the spelling is the first pass's letters, and the layout is in form with one pass or two."""
    answer_marks = list(_ANSWER_MARK.finditer(text))
    if answer_marks:
        raw = text[: answer_marks[-1].start()]
        passes = [p for p in raw.strip().split(". ") if p.strip(" .")]
        before, after = _UNIT_MARK.sub("", passes[0] if passes else raw), text[answer_marks[-1].end():]
        layout_ok = 1 <= len(passes) <= 2 and all(_PASS.fullmatch(p.rstrip(".")) for p in passes) \
            and _UNIT_MARK.search(passes[0]) is None
    else:
        unmarked = _UNIT_MARK.sub("", text)
        runs = list(_SPELLED_RUN.finditer(unmarked))
        if not runs:
            return SpellFirstExtraction(None, False, None)
        longest = max(runs, key=lambda m: len(m.group(0)))
        before, after, layout_ok = unmarked[: longest.end()], unmarked[longest.end():], False
    spelled = extract_spelling(before).value
    final = extract(task, after)
    return SpellFirstExtraction(final.value, layout_ok and final.in_form, spelled)


# ---------------------------------------------------------------------------- dispatch


def gold_value(task: str, gold: str) -> str:
    """The normalized gold answer (letters / letter / digits), for comparison with extractions."""
    if task == "spelling":
        segments = _spelled_segments(gold)
        return segments[0][0] if len(segments) == 1 else re.sub(r"[^a-z]", "", gold.lower())
    if task == "position":
        return _unwrap(gold).lower()
    if task == "count":
        value = extract_count(gold).value
        return value if value is not None else _unwrap(gold)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def extract(task: str, text: str, gold: str | None = None) -> Extraction:
    """Extract ``task``'s answer from ``text``; ``gold`` only tells the asked spelling separator."""
    if task == "spelling":
        return extract_spelling(text, spelling_separator(gold) if gold else None)
    if task == "position":
        return extract_position(text)
    if task == "count":
        return extract_count(text)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute), two-row dynamic programming."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def edit_similarity(predicted: str | None, gold: str) -> float:
    """1 - edit distance / longer length: 1.0 exact, 0.0 nothing in common (or no answer)."""
    predicted = predicted or ""
    longest = max(len(predicted), len(gold))
    return 1.0 if longest == 0 else 1.0 - levenshtein(predicted, gold) / longest


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m spelltransfer.evaluate.answers TASK TEXT")
    print(extract(sys.argv[1], sys.argv[2]))
