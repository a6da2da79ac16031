"""The CUDA-graph chunk layout (static buffers, dummy padding sequences, zero-length sequences)
computes the same loss and gradient as the eager layout. Checked on CPU without capturing: the
graph replays exactly the kernels of ``_forward_backward`` on these buffers."""

from __future__ import annotations

import torch

from spelltransfer.train.packed import PackedTrainer, TrialSpec
from spelltransfer.train.packed.batches import build_chunk, cut_chunks, plan_step
from spelltransfer.train.packed.graphs import GraphedChunks

from test_packed import load, records

TRIALS = [TrialSpec(trial_id="a", seed=1, r=4, alpha=8, batch_size=4),
          TrialSpec(trial_id="b", seed=2, r=8, alpha=16, batch_size=6, grad_accum=2)]


def test_static_layout_matches_eager(tiny_model_path):
    model, tokenizer = load(tiny_model_path)
    trainer = PackedTrainer(model, tokenizer, records(), TRIALS, layout="varlen", max_chunk_tokens=300)
    assert not trainer.cuda_graphs  # CPU: graphs off, eager path
    sequences = plan_step(trainer._step_batches())
    runner = GraphedChunks(trainer, n_tokens=300, max_scored=60, max_len=128)
    parts = cut_chunks(sequences, 300, **runner.limits())
    assert len(parts) >= 2  # the test must exercise several chunks and a padded last one

    eager_loss = torch.zeros(len(TRIALS))
    for part in parts:
        loss, per_trial = trainer._forward_loss(build_chunk(part, len(TRIALS), "varlen", trainer.pad_id))
        loss.backward()
        eager_loss += per_trial
    eager_grad = trainer.weights.grad.clone()
    trainer.weights.grad.zero_()

    static_loss = torch.zeros(len(TRIALS))
    for part in parts:
        n_real, n_scored = runner.load(part)
        assert n_real <= 300 and int(runner.cu[-1]) == 300
        static_loss += runner._forward_backward()
    torch.testing.assert_close(static_loss, eager_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trainer.weights.grad, eager_grad, atol=1e-6, rtol=1e-4)
    assert torch.count_nonzero(eager_grad) > 0
