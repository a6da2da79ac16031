"""``benchmarks/graphs_gradcheck.py`` drives ``GraphedChunks`` with a pydantic-free stand-in for
``PackedTrainer`` (``Bench``, whose ``loss_on_device`` is the trainer's own ``chunk_loss``). Checked here on CPU:
the stand-in gives the trainer's exact per-trial loss and adapter gradient on the same static buffers,
for the HF decoder and the fused decoder, so what the GPU check measures is what the trainer runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from spelltransfer.train.packed import PackedTrainer, TrialSpec
from spelltransfer.train.packed.batches import cut_chunks, plan_step
from spelltransfer.train.packed.graphs import GraphedChunks

from test_packed import load, records

TRIALS = [TrialSpec(trial_id="a", seed=1, r=4, alpha=8, batch_size=4),
          TrialSpec(trial_id="b", seed=2, r=8, alpha=16, batch_size=6, grad_accum=2)]


def _bench_module():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "graphs_gradcheck.py"
    spec = importlib.util.spec_from_file_location("graphs_gradcheck", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fused", [False, True])
def test_bench_stand_in_matches_trainer(tiny_model_path, fused):
    bench_mod = _bench_module()
    model, tokenizer = load(tiny_model_path)
    trainer = PackedTrainer(model, tokenizer, records(), TRIALS, layout="varlen", max_chunk_tokens=300, fused=fused)
    bench = bench_mod.Bench(trainer.model, trainer.weights, trainer.routing, trainer.fused, len(TRIALS),
                            pad_id=trainer.pad_id)
    parts = cut_chunks(plan_step(trainer._step_batches()), 300, max_scored=60, max_seqs=300 // 16)
    results = []
    for owner in (trainer, bench):
        runner = GraphedChunks(owner, n_tokens=300, max_scored=60, max_len=128)
        trainer.weights.grad.zero_()
        losses = torch.zeros(len(TRIALS))
        for part in parts:
            runner.load(part)
            losses += runner._forward_backward()
        results.append((losses, trainer.weights.grad.clone()))
    (loss_t, grad_t), (loss_b, grad_b) = results
    assert torch.equal(loss_t, loss_b)
    assert torch.equal(grad_t, grad_b)
    assert torch.count_nonzero(grad_t) > 0
