"""Word lists: training words single-token, eval words multi-token, all splits disjoint, seeded."""

from __future__ import annotations

import pytest

from spelltransfer.data.words import is_english, select_words, training_word_pool
from spelltransfer.errors import ConfigError


@pytest.fixture(scope="module")
def words(tokenizer):
    return select_words(tokenizer, seed=0, train_words=500, eval_words=600, validation_fraction=0.5)


def test_sizes_and_disjoint(words):
    assert (len(words.train), len(words.validation), len(words.test)) == (500, 300, 300)
    train, validation, test = set(words.train), set(words.validation), set(words.test)
    assert not train & validation and not train & test and not validation & test
    assert list(words.train) == sorted(train)


def test_training_words_are_single_tokens(words, tokenizer):
    for word in words.train:
        assert tokenizer.tokenize(" " + word) == ["Ġ" + word]
        assert word.isascii() and word.isalpha() and word.islower() and 3 <= len(word) <= 12


def test_eval_words_are_multi_token_dictionary_words(words, tokenizer):
    pool = set(training_word_pool(tokenizer))
    for word in words.validation + words.test:
        assert len(tokenizer.tokenize(" " + word)) >= 2, word
        assert word not in pool
        assert word.isascii() and word.isalpha() and word.islower() and 4 <= len(word) <= 12


def test_deterministic_for_a_seed(tokenizer, words):
    again = select_words(tokenizer, seed=0, train_words=500, eval_words=600, validation_fraction=0.5)
    other = select_words(tokenizer, seed=1, train_words=500, eval_words=600, validation_fraction=0.5)
    assert again == words
    assert other.train != words.train and other.test != words.test


def test_fragments_are_not_training_words(tokenizer):
    pool = set(training_word_pool(tokenizer))
    assert {"garden", "house", "running", "walls"} <= pool
    # Space-prefixed vocabulary pieces that are not words.
    assert not {"prohib", "concaten", "interven"} & pool
    assert is_english("deleted") and not is_english("aggrav")


def test_impossible_sizes_raise_config_error(tokenizer):
    with pytest.raises(ConfigError, match="train_words"):
        select_words(tokenizer, train_words=10**6)
    with pytest.raises(ConfigError, match="eval_words"):
        select_words(tokenizer, eval_words=1)
    with pytest.raises(ConfigError, match="validation_fraction"):
        select_words(tokenizer, validation_fraction=1.0)


def test_light_tokenizer_gives_the_same_words(tokenizer, words):
    """The build's transformers-free tokenizer must pick exactly what load_tokenizer() would."""
    from spelltransfer.data.words import load_word_tokenizer

    light = load_word_tokenizer("smollm2-135m")
    assert type(light).__module__.startswith("tokenizers")
    assert select_words(light, seed=0, train_words=500, eval_words=600, validation_fraction=0.5) == words
