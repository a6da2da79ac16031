"""The packed step's loss of one chunk: decoder forward, answer-only LM head, per-trial parts.

Torch only (no pydantic), so the GPU checks in ``benchmarks/`` drive the trainer's own loss
(``PackedTrainer.loss_on_device`` is this function on its model) rather than a copy of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def answer_loss(model, n_trials: int, hidden, predict_at, targets, weights, trial_of):
    """Weighted cross-entropy at the answer positions only: (sum over trials, per-trial parts [K])."""
    logits = model.get_output_embeddings()(hidden.index_select(0, predict_at)).float()
    token_loss = F.cross_entropy(logits, targets, reduction="none") * weights
    per_trial = torch.zeros(n_trials, dtype=torch.float32, device=token_loss.device)
    per_trial.index_add_(0, trial_of, token_loss.detach())
    return token_loss.sum(), per_trial


def chunk_loss(model, fused, n_trials: int, input_ids, position_ids, attention_mask, cu, max_len, predict_at,
               targets, weights, trial_of, *, eager: bool = False):
    """One chunk's weighted answer loss and its per-trial parts [K].

    ``fused``: a ``FusedDecoder`` or None (the HF decoder: variable-length when ``cu`` is given,
    else padded rows with ``attention_mask``). ``eager``: run the fused decoder's uncompiled layer
    functions (the trainer asks for it off the CUDA graphs' fixed shapes).
    """
    if fused is not None:
        hidden = fused.hidden(input_ids[0], position_ids[0], cu, max_len, eager=eager)
        return answer_loss(model, n_trials, hidden, predict_at, targets, weights, trial_of)
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    if cu is not None:
        out = body(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                   cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max_len, max_length_k=max_len)
    else:
        out = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])
    return answer_loss(model, n_trials, hidden, predict_at, targets, weights, trial_of)
