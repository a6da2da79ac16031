"""The loss covers only the answer, which ends with the end-of-turn token; the answer-only
head gives the same loss and gradients as the model's full-vocabulary loss."""

from __future__ import annotations

import pytest


def test_labels_mask_prompt_and_end_with_end_of_turn(tiny_model_path):
    from spelltransfer.models import PromptFormat, load_tokenizer
    from spelltransfer.train.dataset import IGNORE_INDEX, tokenize_example

    tokenizer = load_tokenizer(tiny_model_path)
    fmt = PromptFormat.from_tokenizer(tokenizer)
    record = {"task": "spelling", "prompt": "Spell garden with dashes.", "answer": "g-a-r-d-e-n"}
    example = tokenize_example(record, tokenizer, fmt, max_seq_length=128)
    n_prompt = len(tokenizer(fmt.prompt(record["prompt"]), add_special_tokens=False)["input_ids"])
    assert example.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    answer_ids = example.labels[n_prompt:]
    assert IGNORE_INDEX not in answer_ids
    assert tokenizer.decode(answer_ids) == "g-a-r-d-e-n<|im_end|>"
    assert answer_ids[-1] in fmt.stop_token_ids()
    # Too long: the prompt loses its oldest tokens, the answer is kept whole.
    short = tokenize_example(record, tokenizer, fmt, max_seq_length=20)
    assert len(short.input_ids) == 20 and short.labels[-len(answer_ids):] == answer_ids


def test_answer_only_loss_equals_full_loss(tiny_model_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from spelltransfer.train.loss import answer_only_loss, full_logits_loss

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    ids = torch.randint(0, 1000, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    labels = ids.clone()
    labels[:, :6] = -100
    labels[2, 9:] = -100
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    grads = []
    losses = []
    for fn in (answer_only_loss, full_logits_loss):
        model.zero_grad()
        loss = fn(model, batch)
        loss.backward()
        losses.append(float(loss))
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
