"""Fixtures for the evaluation tests: a few hand-written items and an engine on the tiny model."""

from __future__ import annotations

import json

import pytest

ITEMS = [
    {"task": "spelling", "word": "garden", "prompt": "Spell the word garden with dashes between the letters, like c-a-t.",
     "answer": "g-a-r-d-e-n", "template_id": "spelling/0", "split": "test"},
    {"task": "spelling", "word": "tulle", "prompt": "How do you spell tulle? Separate the letters with single spaces (e.g. c a t).",
     "answer": "t u l l e", "template_id": "spelling/1", "split": "test"},
    {"task": "spelling", "word": "shilfa", "prompt": "Spell out shilfa letter by letter, using a comma and a space as separators, as in c, a, t.",
     "answer": "s, h, i, l, f, a", "template_id": "spelling/3", "split": "test"},
    {"task": "position", "word": "garden", "prompt": "What is the 3rd letter of garden?", "answer": "r",
     "template_id": "position/0", "split": "test"},
    {"task": "position", "word": "house", "prompt": "What is the last letter of the word house?", "answer": "e",
     "template_id": "position/1", "split": "test"},
    {"task": "position", "word": "cledge", "prompt": "The word is cledge. What is its 1st letter?", "answer": "c",
     "template_id": "position/6", "split": "test"},
    {"task": "count", "word": "strawberry", "prompt": "How many times does r appear in strawberry? Reply with a number.",
     "answer": "3", "template_id": "count/0", "split": "test"},
    {"task": "count", "word": "cledge", "prompt": "Consider cledge: how many times does q appear? Reply with a number.",
     "answer": "0", "template_id": "count/9", "split": "test"},
    {"task": "count", "word": "garden", "prompt": "How many times does g appear in garden? Reply with a number.",
     "answer": "1", "template_id": "count/0", "split": "test"},
]


@pytest.fixture
def items() -> list[dict]:
    return [dict(item) for item in ITEMS]


@pytest.fixture
def dataset_dir(tmp_path):
    """A dataset folder holding just ``test.jsonl`` with the hand-written items."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "test.jsonl").write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    return folder


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_path):
    from spelltransfer.evaluate import HFGenerationEngine

    return HFGenerationEngine(tiny_model_path, batch_size=4, device="cpu")


@pytest.fixture(scope="session")
def chatty_model_path(tmp_path_factory, tiny_model_path) -> str:
    """Like ``tiny_model_path`` but with large random weights, so greedy output is varied text
    (the shared tiny model only writes newlines, which would make equality checks vacuous)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("chatty-llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.5,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny models run many small ops; on a shared 2-core machine one thread avoids OpenMP
    barrier waits that made these tests several times slower. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
