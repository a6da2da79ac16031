"""Greedy answers of many trials at once: every prompt repeated once per trial, rows grouped by trial.

The packed model routes each row to its trial's adapter (``Routing.set_row_counts``), so one
``generate`` call evaluates all trials on a batch of prompts -- the evaluation counterpart of
packed training. Attention switches to SDPA with left padding for the KV-cached decode and back
afterwards.
"""

from __future__ import annotations

import torch

from spelltransfer.train.packed import attention


@torch.no_grad()
def generate_for_trials(model, tokenizer, routing, trial_indices: list[int], prompts: list[str], *,
                        max_new_tokens: int = 32, rows_per_call: int = 4096, stop_token_ids: list[int] | None = None,
                        restore_attention: str | None = None) -> dict[int, list[str]]:
    """Greedy completions ``{trial: [text per prompt]}`` for chat-formatted ``prompts``."""
    from spelltransfer.models import PromptFormat

    fmt = PromptFormat.from_tokenizer(tokenizer)
    stop_ids = stop_token_ids or fmt.stop_token_ids()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n_trials = routing.n_trials
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    attention.set_attention(model, "sdpa")
    outputs: dict[int, list[str]] = {k: [] for k in trial_indices}
    per_call = max(1, rows_per_call // max(1, len(trial_indices)))
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), per_call):
            batch_prompts = prompts[start:start + per_call]
            encoded = tokenizer(batch_prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            repeat = len(trial_indices)
            input_ids = encoded["input_ids"].repeat(repeat, 1).to(device)
            mask = encoded["attention_mask"].repeat(repeat, 1).to(device)
            counts = [0] * n_trials
            for k in trial_indices:
                counts[k] = len(batch_prompts)
            if sorted(trial_indices) != list(trial_indices):
                raise ValueError("trial_indices must be in increasing order (rows are grouped by trial)")
            routing.set_row_counts(counts)
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stop_ids, pad_token_id=pad_id)
            new = out[:, input_ids.shape[1]:]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for i, k in enumerate(trial_indices):
                outputs[k].extend(t.strip() for t in texts[i * len(batch_prompts):(i + 1) * len(batch_prompts)])
    finally:
        tokenizer.padding_side = old_side
        if restore_attention:
            attention.set_attention(model, restore_attention)
        model.train(was_training)
    return outputs
