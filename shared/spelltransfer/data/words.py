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
    return [len(ids) for ids in _encode_batch(tokenizer, [" " + w for w in words])]


_ENCODED: dict = {}  # (tokenizer, texts) -> ids: a build tokenizes the whole dictionary, several builds per process reuse it


def _encode_batch(tokenizer, texts: list[str]) -> tuple[tuple[int, ...], ...]:
    """Token ids of each text, no special tokens, through the Rust tokenizer (an HF fast
    tokenizer's ``backend_tokenizer``: the same ids without the per-item Python conversion)."""
    from tokenizers import Tokenizer

    backend = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
    key = (id(backend if backend is not None else tokenizer), len(texts), hash(tuple(texts)))
    if key not in _ENCODED:
        if backend is not None:
            encoded = tuple(tuple(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False))
        else:
            encoded = tuple(tuple(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        if len(_ENCODED) >= 8:
            _ENCODED.pop(next(iter(_ENCODED)))
        _ENCODED[key] = encoded
    return _ENCODED[key]


TRAIN_SOURCES = ("single", "dictionary", "both")


def word_pieces(tokenizer, words: list[str]) -> list[frozenset[int]]:
    """Token ids each word is made of, in every presentation a prompt uses (bare and quoted).

    Quoting changes the split (" garden" vs " 'garden'" vs ' "garden"'), so a piece a model must
    learn to spell can appear in any of the three forms.
    """
    from spelltransfer.data.presentation import PRESENTATIONS, present

    pieces: list[set[int]] = [set() for _ in words]
    for name in PRESENTATIONS:
        encoded = _encode_batch(tokenizer, [" " + present(w, name) for w in words])
        for bag, ids in zip(pieces, encoded):
            bag.update(ids)
    return [frozenset(bag) for bag in pieces]


def coverage_select(candidates: list[str], pieces: list[frozenset[int]], n: int, seed: int) -> list[str]:
    """``n`` candidates chosen to cover as many distinct pieces as possible (lazy greedy max
    coverage, ties in a seeded order); once every piece is covered the rest are a seeded sample."""
    import heapq

    if n >= len(candidates):
        return list(candidates)
    order = list(range(len(candidates)))
    random.Random(f"coverage/{seed}").shuffle(order)
    rank = {index: r for r, index in enumerate(order)}
    heap = [(-len(pieces[i]), rank[i], i) for i in order]
    heapq.heapify(heap)
    covered: set[int] = set()
    chosen: list[int] = []
    while heap and len(chosen) < n:
        negative_gain, r, index = heapq.heappop(heap)
        gain = len(pieces[index] - covered)
        if gain == 0:
            heapq.heappush(heap, (0, r, index))
            break
        if gain < -negative_gain:  # stale: push back with its current gain
            heapq.heappush(heap, (-gain, r, index))
            continue
        chosen.append(index)
        covered |= pieces[index]
    taken = set(chosen)
    rest = [i for i in order if i not in taken]
    chosen.extend(rest[: n - len(chosen)])
    return [candidates[i] for i in chosen]


def piece_coverage(tokenizer, train: tuple[str, ...], others: dict[str, tuple[str, ...]]) -> dict:
    """How many distinct pieces the training words hold, and the share of each other split's
    pieces (over all presentations) that some training word also contains."""
    train_pieces = frozenset().union(*word_pieces(tokenizer, list(train))) if train else frozenset()
    report = {"train_pieces": len(train_pieces)}
    for split, words in others.items():
        pieces = frozenset().union(*word_pieces(tokenizer, list(words))) if words else frozenset()
        report[f"{split}_pieces"] = len(pieces)
        report[f"{split}_pieces_in_train"] = round(len(pieces & train_pieces) / max(1, len(pieces)), 4)
    return report


def select_words(tokenizer, *, seed: int = 0, train_words: int = 3000, eval_words: int = 3000,
                 validation_fraction: float = 0.4, train_min_len: int = 3, train_max_len: int = 12,
                 eval_min_len: int = 4, eval_max_len: int = 12, train_source: str = "single",
                 coverage: bool = True) -> WordLists:
    """Draw the training words and the validation/test words for ``seed``.

    ``train_source``: ``single`` (whole-word tokens), ``dictionary`` (multi-token dictionary
    words that are not eval words) or ``both`` (half each, the single half rounded down).
    ``coverage``: pick the dictionary words to cover the most tokenizer pieces, else at random.
    Eval candidates are visited in a seeded order and tokenized in chunks until enough
    multi-token words are found, so only a few thousand of the ~70k are ever tokenized
    (the ``dictionary`` source tokenizes them all).
    """
    if train_source not in TRAIN_SOURCES:
        raise ConfigError(f"train_source must be one of {', '.join(TRAIN_SOURCES)}, got {train_source!r}")
    if train_words < 1:
        raise ConfigError(f"train_words must be >= 1, got {train_words}")
    if eval_words < 2:
        raise ConfigError(f"eval_words must be >= 2 (validation and test need one each), got {eval_words}")
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    n_validation = min(max(1, round(eval_words * validation_fraction)), eval_words - 1)
    n_dictionary = {"single": 0, "dictionary": train_words, "both": train_words - train_words // 2}[train_source]
    n_single = train_words - n_dictionary

    pool = training_word_pool(tokenizer, train_min_len, train_max_len)
    if n_single > len(pool):
        raise ConfigError(f"train_words={train_words} needs {n_single} single-token English words but the tokenizer "
                          f"has only {len(pool)} of length {train_min_len}..{train_max_len}; lower train_words")
    single = random.Random(f"train-words/{seed}").sample(pool, n_single) if n_single else []
    pool_set = set(pool)

    candidates = eval_word_candidates(eval_min_len, eval_max_len)
    random.Random(f"eval-words/{seed}").shuffle(candidates)
    chosen: list[str] = []
    scanned = 0
    for start in range(0, len(candidates), 4096):
        chunk = [w for w in candidates[start:start + 4096] if w not in pool_set]
        chosen.extend(w for w, n in zip(chunk, token_counts(tokenizer, chunk)) if n >= 2)
        scanned = start + 4096
        if len(chosen) >= eval_words:
            break
    if len(chosen) < eval_words:
        raise ConfigError(f"eval_words={eval_words} but only {len(chosen)} multi-token dictionary words of "
                          f"length {eval_min_len}..{eval_max_len} exist; lower eval_words")
    # Candidates scanned past the cut stay eligible for training; the eval words never are.
    eval_set = set(chosen[:eval_words])
    leftover = chosen[eval_words:]
    dictionary: list[str] = []
    if n_dictionary:
        rest = [w for w in candidates[scanned:] if w not in pool_set]
        rest = leftover + [w for w, n in zip(rest, token_counts(tokenizer, rest)) if n >= 2]
        rest = sorted(w for w in set(rest) if w not in eval_set and train_min_len <= len(w) <= train_max_len)
        if n_dictionary > len(rest):
            raise ConfigError(f"train_words={train_words} needs {n_dictionary} multi-token dictionary words but only "
                              f"{len(rest)} remain beside the eval words; lower train_words")
        if coverage:
            dictionary = coverage_select(rest, word_pieces(tokenizer, rest), n_dictionary, seed)
        else:
            dictionary = random.Random(f"dictionary-words/{seed}").sample(rest, n_dictionary)
    chosen = chosen[:eval_words]
    train = tuple(sorted(set(single) | set(dictionary)))
    words = WordLists(train=train, validation=tuple(sorted(chosen[:n_validation])),
                      test=tuple(sorted(chosen[n_validation:])), train_pool=len(pool),
                      eval_candidates=len(candidates))
    check_disjoint(words)
    return words


def check_disjoint(words: WordLists) -> None:
    """Validation and test words share nothing with each other or with any training word."""
    train, validation, test = set(words.train), set(words.validation), set(words.test)
    for name, overlap in (("train/validation", train & validation), ("train/test", train & test),
                          ("validation/test", validation & test)):
        if overlap:
            raise ConfigError(f"word lists overlap ({name}): {sorted(overlap)[:5]}")
