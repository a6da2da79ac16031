"""Lay out one packed step: every trial's examples, sorted by trial, cut into chunks that fit memory.

Loss weights carry the trainer's exact objective: trial k's step loss is the mean over its
``grad_accum`` micro-batches of each micro-batch's mean answer-token loss (what
``spelltransfer.train.trainer`` computes with ``loss / grad_accum``), so an answer token of
micro-batch j has weight ``1 / (grad_accum * answer_tokens(j))``. With the weights fixed per
token, where the chunks are cut changes nothing but the summation order.

Two layouts:
* ``varlen`` -- one row ``[1, N]``: sequences end to end, positions restarting per sequence,
  cumulative lengths for variable-length attention. No padding at all.
* ``padded`` -- one row per sequence, right-padded to the chunk's longest; plain SDPA with a
  padding mask. The fallback where variable-length attention is unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spelltransfer.train.dataset import IGNORE_INDEX

LAYOUTS = ("varlen", "padded")


@dataclass
class PreparedExample:
    """Token ids, and where the loss is read: position i predicts ``targets`` at ``predict_at[i]``."""

    ids: np.ndarray
    predict_at: np.ndarray   # positions (relative) whose next token is an answer token
    targets: np.ndarray

    @classmethod
    def from_tokenized(cls, input_ids: list[int], labels: list[int]) -> "PreparedExample":
        labels_arr = np.asarray(labels, dtype=np.int64)
        answer = np.nonzero(labels_arr[1:] != IGNORE_INDEX)[0]
        return cls(np.asarray(input_ids, dtype=np.int64), answer, labels_arr[answer + 1])

    @property
    def n_answer(self) -> int:
        return int(self.predict_at.shape[0])


@dataclass
class Chunk:
    """Host tensors of one forward/backward pass."""

    input_ids: torch.Tensor          # [1, N] (varlen) or [S, T] (padded)
    position_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    cu_seqlens: torch.Tensor | None  # int32 [S + 1] (varlen)
    max_len: int
    predict_at: torch.Tensor         # flat token positions whose logits are scored
    targets: torch.Tensor
    weights: torch.Tensor            # float32 per scored position
    trial_of: torch.Tensor           # trial index per scored position
    token_ends: list[int]            # per trial, over the flat token order
    n_tokens: int                    # real (non-padding) tokens


@dataclass
class Sequence:
    trial: int
    example: PreparedExample
    weight: float


def plan_step(batches: dict[int, list[list[PreparedExample]]]) -> list[Sequence]:
    """Sequences of one step, in trial order; ``batches[k]`` = trial k's micro-batches."""
    sequences = []
    for k in sorted(batches):
        micro_batches = batches[k]
        accum = len(micro_batches)
        for micro in micro_batches:
            n_answer = sum(e.n_answer for e in micro)
            weight = 1.0 / (accum * n_answer) if n_answer else 0.0
            sequences.extend(Sequence(k, e, weight) for e in micro)
    return sequences


def cut_chunks(sequences: list[Sequence], max_tokens: int, max_scored: int | None = None,
               max_seqs: int | None = None) -> list[list[Sequence]]:
    """Consecutive runs of sequences within the limits (one sequence never splits)."""
    chunks, current, size, scored = [], [], 0, 0
    for seq in sequences:
        length, answer = len(seq.example.ids), seq.example.n_answer
        if current and (size + length > max_tokens or (max_scored is not None and scored + answer > max_scored)
                        or (max_seqs is not None and len(current) >= max_seqs)):
            chunks.append(current)
            current, size, scored = [], 0, 0
        current.append(seq)
        size += length
        scored += answer
    if current:
        chunks.append(current)
    return chunks


def build_chunk(sequences: list[Sequence], n_trials: int, layout: str, pad_id: int) -> Chunk:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} (got {layout!r})")
    lengths = np.array([len(s.example.ids) for s in sequences], dtype=np.int64)
    counts = np.zeros(n_trials, dtype=np.int64)
    for s in sequences:
        counts[s.trial] += 1
    n_real = int(lengths.sum())
    max_len = int(lengths.max())
    if layout == "varlen":
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        input_ids = torch.from_numpy(np.concatenate([s.example.ids for s in sequences])).unsqueeze(0)
        position_ids = torch.from_numpy(np.concatenate([np.arange(n) for n in lengths])).unsqueeze(0)
        cu = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        attention_mask = None
        tokens_per_trial = np.zeros(n_trials, dtype=np.int64)
        for s, n in zip(sequences, lengths):
            tokens_per_trial[s.trial] += n
    else:
        starts = np.arange(len(sequences)) * max_len
        grid = np.full((len(sequences), max_len), pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), max_len), dtype=np.int64)
        for row, (s, n) in enumerate(zip(sequences, lengths)):
            grid[row, :n] = s.example.ids
            mask[row, :n] = 1
        input_ids, attention_mask = torch.from_numpy(grid), torch.from_numpy(mask)
        position_ids, cu = None, None
        tokens_per_trial = counts * max_len
    predict_at = np.concatenate([s.example.predict_at + start for s, start in zip(sequences, starts)])
    targets = np.concatenate([s.example.targets for s in sequences])
    weights = np.concatenate([np.full(s.example.n_answer, s.weight, dtype=np.float32) for s in sequences])
    trial_of = np.concatenate([np.full(s.example.n_answer, s.trial, dtype=np.int64) for s in sequences])
    return Chunk(input_ids, position_ids, attention_mask, cu, max_len, torch.from_numpy(predict_at),
                 torch.from_numpy(targets), torch.from_numpy(weights), torch.from_numpy(trial_of),
                 np.cumsum(tokens_per_trial).tolist(), n_real)
