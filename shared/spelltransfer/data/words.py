"""Which words the model trains on and which it is tested on.

* **Training words** are whole-word tokens of the model's own vocabulary: tokens "Ġ" + lowercase
  a-z (the space-prefixed form, which is how a word mid-sentence is tokenized), length 3..12,
  that are English words. For these the model sees one opaque token and has to *recall* its
  letters -- the skill the study trains. The English check (the word, or its stem under a plain
  -s/-es/-ed/-ing/-er/-ly rule, is in the dictionary below) drops sub-word fragments that are also
  space-prefixed tokens ("Ġprohib", "Ġconcaten"); words shorter than 3 are mostly function words
  and spell trivially.
* **Eval words** come from the dictionaries in the PyPI package ``english-words``: words listed in
  both Webster's 2nd (``web2``, entries already lowercase there, which leaves out proper nouns) and
  GCIDE, the intersection preferring real headwords over rare variants; a-z, length 4..12, and
  split by the tokenizer into >= 2 tokens when written with a leading space (" strawberry" ->
  " str", "aw", "berry"), exactly as templates place them. They are therefore never training
  words (those are single tokens in that same form); the code checks that too.
* Validation and test words are disjoint: one seeded shuffle, cut in two.

Everything is sorted before any seeded draw, so the lists depend on the seed and tokenizer only.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

from spelltransfer.errors import ConfigError

WORD_RE = re.compile(r"[a-z]+")
SPACE_MARK = "Ġ"  # byte-level BPE's rendering of a leading space
_SUFFIXES = ("ing", "es", "ed", "er", "ly", "s", "d")


@dataclass(frozen=True)
class WordLists:
    """The three disjoint word lists of a dataset, each sorted, plus the pool sizes they came from."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    train_pool: int  # single-token English words available
    eval_candidates: int  # dictionary words of the right length, before the multi-token check

    def for_split(self, split: str) -> tuple[str, ...]:
        return {"train": self.train, "validation": self.validation, "test": self.test}[split]

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "validation": list(self.validation), "test": list(self.test)}


@lru_cache(maxsize=1)
def _dictionaries() -> tuple[frozenset[str], frozenset[str]]:
    """(web2 entries written lowercase, GCIDE entries lowercased), a-z only."""
    from english_words import get_english_words_set

    web2 = frozenset(w for w in get_english_words_set(["web2"]) if WORD_RE.fullmatch(w))
    gcide = frozenset(w for w in get_english_words_set(["gcide"], lower=True) if WORD_RE.fullmatch(w))
    return web2, gcide


def is_english(word: str) -> bool:
    """In either dictionary, directly or as a plain inflection (dictionaries list lemmas only)."""
    web2, gcide = _dictionaries()
    known = lambda w: w in web2 or w in gcide  # noqa: E731
    if known(word):
        return True
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            undoubled = stem[:-1] if len(stem) > 3 and stem[-1] == stem[-2] else stem
            if known(stem) or known(stem + "e") or known(undoubled) or (stem.endswith("i") and known(stem[:-1] + "y")):
                return True
    return False


def training_word_pool(tokenizer, min_len: int = 3, max_len: int = 12) -> list[str]:
    """Sorted English words that are one space-prefixed token of ``tokenizer``'s vocabulary."""
    pool = set()
    for token in tokenizer.get_vocab():
        if token.startswith(SPACE_MARK):
            word = token[len(SPACE_MARK):]
            if min_len <= len(word) <= max_len and WORD_RE.fullmatch(word) and is_english(word):
                pool.add(word)
    return sorted(pool)


def eval_word_candidates(min_len: int = 4, max_len: int = 12) -> list[str]:
    """Sorted dictionary words (web2 ∩ GCIDE) of the right length, before any tokenizer check."""
    web2, gcide = _dictionaries()
    return sorted(w for w in web2 & gcide if min_len <= len(w) <= max_len)


def load_word_tokenizer(model: str):
    """The tokenizer that decides single- vs multi-token words, as cheaply as possible.

    For a local folder with ``tokenizer.json`` (the bundled model once converted) this is the
    ``tokenizers`` object itself: the same vocabulary and splits as ``load_tokenizer`` gives,
    without importing transformers and torch (~10-30 s of a ~3 s build on this machine).
    Anything else goes through ``spelltransfer.models.load_tokenizer``.
    """
    from pathlib import Path

    from spelltransfer.models import load_tokenizer, resolve_model_path

    path = Path(resolve_model_path(model))
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.name_or_path = str(path)  # for the manifest, like an HF tokenizer's attribute
        return tokenizer
    return load_tokenizer(model)


def describe_tokenizer(tokenizer) -> dict:
    """Name and vocabulary size for the manifest, for either kind of tokenizer."""
    return {"name_or_path": getattr(tokenizer, "name_or_path", None), "vocab_size": len(tokenizer.get_vocab())}


def token_counts(tokenizer, words: list[str]) -> list[int]:
    """Tokens per word as it appears in a prompt: after a space, no special tokens.

    Takes an HF tokenizer or a bare ``tokenizers.Tokenizer`` (see ``load_word_tokenizer``).
    """
    from tokenizers import Tokenizer

    texts = [" " + w for w in words]
    if isinstance(tokenizer, Tokenizer):
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def select_words(tokenizer, *, seed: int = 0, train_words: int = 3000, eval_words: int = 3000,
                 validation_fraction: float = 0.4, train_min_len: int = 3, train_max_len: int = 12,
                 eval_min_len: int = 4, eval_max_len: int = 12) -> WordLists:
    """Draw the training words and the validation/test words for ``seed``.

    Eval candidates are visited in a seeded order and tokenized in chunks until enough
    multi-token words are found, so only a few thousand of the ~70k are ever tokenized.
    """
    if train_words < 1:
        raise ConfigError(f"train_words must be >= 1, got {train_words}")
    if eval_words < 2:
        raise ConfigError(f"eval_words must be >= 2 (validation and test need one each), got {eval_words}")
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    n_validation = min(max(1, round(eval_words * validation_fraction)), eval_words - 1)

    pool = training_word_pool(tokenizer, train_min_len, train_max_len)
    if train_words > len(pool):
        raise ConfigError(f"train_words={train_words} but the tokenizer has only {len(pool)} single-token "
                          f"English words of length {train_min_len}..{train_max_len}; lower train_words")
    train = sorted(random.Random(f"train-words/{seed}").sample(pool, train_words))
    pool_set = set(pool)

    candidates = eval_word_candidates(eval_min_len, eval_max_len)
    random.Random(f"eval-words/{seed}").shuffle(candidates)
    chosen: list[str] = []
    for start in range(0, len(candidates), 4096):
        chunk = [w for w in candidates[start:start + 4096] if w not in pool_set]
        chosen.extend(w for w, n in zip(chunk, token_counts(tokenizer, chunk)) if n >= 2)
        if len(chosen) >= eval_words:
            break
    if len(chosen) < eval_words:
        raise ConfigError(f"eval_words={eval_words} but only {len(chosen)} multi-token dictionary words of "
                          f"length {eval_min_len}..{eval_max_len} exist; lower eval_words")
    chosen = chosen[:eval_words]
    return WordLists(train=tuple(train), validation=tuple(sorted(chosen[:n_validation])),
                     test=tuple(sorted(chosen[n_validation:])), train_pool=len(pool),
                     eval_candidates=len(candidates))
