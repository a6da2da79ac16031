"""Next-token loss on the answer only, computing logits only where there is a label.

The prompt (system preamble + question) is most of each sequence and carries no loss, yet a
plain ``model(**batch).loss`` projects every position onto the 49,152-token vocabulary. Running
the decoder, keeping the hidden states whose next token is an answer token, and applying the
output head to those alone gives the same loss (mean over answer tokens, logits upcast to fp32
as transformers does) for a fraction of the head's compute and memory.
"""

from __future__ import annotations

IGNORE_INDEX = -100


def answer_only_loss(model, batch: dict):
    """Mean cross-entropy over labelled next tokens of a causal LM (PEFT-wrapped or not)."""
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), labels[keep])


def full_logits_loss(model, batch: dict):
    """The model's own loss (Unsloth fuses the head and cross-entropy itself)."""
    return model(**batch).loss
