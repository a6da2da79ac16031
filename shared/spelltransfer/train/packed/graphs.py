"""One chunk's forward + backward captured as a CUDA graph, replayed for every chunk.

Why: on the GPU machines here an eager forward+backward of the 30-layer model costs ~0.25 s of
CPU time (about 8,000 kernel launches through Python and autograd) whatever its size -- measured:
the step time of HF, Unsloth and eager packed training barely moves from 32 to 2,048 examples.
A graph replays all those kernels with one launch, so the GPU, not the CPU, sets the pace.

A graph needs fixed shapes, so every chunk is laid out in the same static buffers: ``N`` tokens
(real sequences, then padding split into dummy sequences of at most ``max_len`` tokens, then
zero-length sequences to fill ``cu_seqlens``), ``M`` scored positions (padding has weight 0),
and per-trial token offsets for the grouped GEMMs (padding belongs to the last trial). Gradients
accumulate straight into the adapters' flat gradient buffer, which is static too.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from spelltransfer.train.packed.batches import Sequence
from spelltransfer.train.packed.optimizer import _to_device

log = logging.getLogger(__name__)


class GraphedChunks:
    def __init__(self, trainer, n_tokens: int, max_scored: int, max_len: int):
        dev = trainer.device
        self.trainer = trainer
        self.n_tokens, self.max_scored, self.max_len = n_tokens, max_scored, max_len
        self.max_real_seqs = max(1, n_tokens // 16)
        self.n_seqs = self.max_real_seqs + -(-n_tokens // max_len) + 1
        n_trials = len(trainer.trials)
        self.input_ids = torch.full((1, n_tokens), trainer.pad_id, dtype=torch.long, device=dev)
        self.position_ids = torch.zeros((1, n_tokens), dtype=torch.long, device=dev)
        self.cu = torch.zeros(self.n_seqs + 1, dtype=torch.int32, device=dev)
        self.offsets = torch.full((n_trials,), n_tokens, dtype=torch.int32, device=dev)
        self.predict_at = torch.zeros(max_scored, dtype=torch.long, device=dev)
        self.targets = torch.zeros(max_scored, dtype=torch.long, device=dev)
        self.weights = torch.zeros(max_scored, dtype=torch.float32, device=dev)
        self.trial_of = torch.zeros(max_scored, dtype=torch.long, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.per_trial: torch.Tensor | None = None
        self._ends: list[int] = [n_tokens] * n_trials

    def limits(self) -> dict:
        return {"max_scored": self.max_scored, "max_seqs": self.max_real_seqs}

    def load(self, sequences: list[Sequence]) -> tuple[int, int]:
        """Copy one chunk into the static buffers; returns (real tokens, scored positions)."""
        n, m, n_trials = self.n_tokens, self.max_scored, len(self.trainer.trials)
        lengths = np.array([len(s.example.ids) for s in sequences], dtype=np.int64)
        n_real = int(lengths.sum())
        if n_real > n or len(sequences) > self.max_real_seqs:
            raise ValueError(f"chunk of {n_real} tokens / {len(sequences)} sequences exceeds the graph's {n} / {self.max_real_seqs}")
        pad = n - n_real
        dummy = [self.max_len] * (pad // self.max_len) + ([pad % self.max_len] if pad % self.max_len else [])
        all_lengths = np.concatenate([lengths, np.array(dummy, dtype=np.int64)])
        ids = np.full(n, self.trainer.pad_id, dtype=np.int64)
        ids[:n_real] = np.concatenate([s.example.ids for s in sequences])
        positions = np.concatenate([np.arange(k) for k in all_lengths])
        cu = np.full(self.n_seqs + 1, n, dtype=np.int32)
        cu[0] = 0
        cu[1:len(all_lengths) + 1] = np.cumsum(all_lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        predict_at = np.concatenate([s.example.predict_at + start for s, start in zip(sequences, starts)])
        scored = int(predict_at.shape[0])
        if scored > m:
            raise ValueError(f"chunk scores {scored} positions, more than the graph's {m}")
        padded = lambda values, dtype: np.concatenate([values, np.zeros(m - scored, dtype=dtype)]).astype(dtype)  # noqa: E731
        targets = np.concatenate([s.example.targets for s in sequences])
        weights = np.concatenate([np.full(s.example.n_answer, s.weight, dtype=np.float32) for s in sequences])
        trial_of = np.concatenate([np.full(s.example.n_answer, s.trial, dtype=np.int64) for s in sequences])
        per_trial = np.zeros(n_trials, dtype=np.int64)
        for s, length in zip(sequences, lengths):
            per_trial[s.trial] += length
        ends = np.cumsum(per_trial)
        ends[-1] = n  # the padding belongs to the last trial
        self._ends = ends.tolist()
        host_long = torch.from_numpy(np.concatenate([ids, positions, padded(predict_at, np.int64), padded(targets, np.int64),
                                                     padded(trial_of, np.int64)]))
        host_int = torch.from_numpy(np.concatenate([cu, ends.astype(np.int32)]))
        dev = self.input_ids.device
        dev_long, dev_int = _to_device(host_long, dev), _to_device(host_int, dev)
        dev_w = _to_device(torch.from_numpy(padded(weights, np.float32)), dev)
        self.input_ids[0].copy_(dev_long[:n])
        self.position_ids[0].copy_(dev_long[n:2 * n])
        self.predict_at.copy_(dev_long[2 * n:2 * n + m])
        self.targets.copy_(dev_long[2 * n + m:2 * n + 2 * m])
        self.trial_of.copy_(dev_long[2 * n + 2 * m:])
        self.cu.copy_(dev_int[:self.n_seqs + 1])
        self.offsets.copy_(dev_int[self.n_seqs + 1:])
        self.weights.copy_(dev_w)
        return n_real, scored

    def _forward_backward(self):
        trainer = self.trainer
        trainer.routing.set_token_ends(self._ends, self.offsets)
        loss, per_trial = trainer.loss_on_device(self.input_ids, self.position_ids, None, self.cu, self.max_len,
                                                 self.predict_at, self.targets, self.weights, self.trial_of)
        loss.backward()
        return per_trial

    def run(self) -> torch.Tensor:
        """Forward+backward of the loaded chunk (gradients accumulate); per-trial loss of the chunk."""
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.per_trial

    def _capture(self) -> None:
        grad = self.trainer.weights.grad
        saved = grad.clone()  # warm-up passes add to the gradient; the real contribution is the replay
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._forward_backward()
            torch.cuda.current_stream().wait_stream(stream)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()  # give the warm-up's activations back before the graph takes its pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                per_trial = self._forward_backward()
        finally:
            torch.cuda.synchronize()
            grad.copy_(saved)
            del saved
        self.per_trial, self.graph = per_trial, graph
        log.info("captured a CUDA graph of %d tokens / %d scored positions", self.n_tokens, self.max_scored)
