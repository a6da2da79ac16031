"""The compiled fused decoder outside the CUDA graphs' fixed shapes (issue 14 review, CPU).

``FusedDecoder.enable_compile`` compiles the layer functions with ``dynamic=False, fullgraph=True``:
(a) every new chunk size is a Dynamo recompile, and past ``recompile_limit`` the call raises
(``FailOnRecompileLimitHit``), so a compiled ``PackedTrainer`` crashed in ``eval_losses`` (and in
any step without graphs), whose chunks change size; (b) with the slice-loop LoRA kernel the
python ``ends`` list is a guarded argument, so every new set of trial boundaries recompiles too.
The fix: the trainer runs the compiled functions only inside the graph pass (fixed shapes), the
eager ones elsewhere, and refuses ``compile=True`` with the loop kernel. Dynamo runs with the
``eager`` backend here (no Inductor: the guards and recompiles are Dynamo's) and a recompile
limit of 2 (layer 0 and the others are two entries per shape: ``x.requires_grad`` differs).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.exc import FailOnRecompileLimitHit
from torch._dynamo.utils import counters

from spelltransfer.errors import ConfigError
from spelltransfer.train.packed import PackedTrainer
from spelltransfer.train.packed.fused import FusedDecoder
from spelltransfer.train.packed.multi_lora import _probe_cpu_grouped_mm, inject_multi_lora

from test_packed import TRIALS, load, records

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture
def dynamo(monkeypatch):
    """torch.compile -> Dynamo with the eager backend, recompile limit 2; counters from zero."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, **{**kw, "backend": "eager"}))
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(recompile_limit=2):
        yield
    torch._dynamo.reset()


def graphs() -> int:
    """Graphs Dynamo has compiled since the fixture started."""
    return counters["stats"]["unique_graphs"]


def _decoder(kernel: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    weights, routing = inject_multi_lora(model, ALL, [4, 2], [8, 4], kernel=kernel)
    return FusedDecoder(model, weights, routing, compile=True), routing


def _hidden(decoder, routing, n: int, ends: list[int]):
    routing.set_token_ends(ends)
    ids = torch.randint(3, 64, (n,), generator=torch.Generator().manual_seed(n))
    return decoder.hidden(ids, torch.arange(n), torch.tensor([0, n], dtype=torch.int32), n)


def test_compiled_layers_recompile_per_chunk_size(dynamo):
    """(a), the mechanism: a new N is a new graph; the second new N exceeds the limit and raises."""
    if not _probe_cpu_grouped_mm():
        pytest.skip("this torch has no CPU torch._grouped_mm")
    decoder, routing = _decoder("grouped")
    _hidden(decoder, routing, 20, [8, 20])
    _hidden(decoder, routing, 20, [5, 20])          # same N, other boundaries: offsets are a tensor, no recompile
    with pytest.raises(FailOnRecompileLimitHit):
        _hidden(decoder, routing, 24, [8, 24])
    assert decoder.hidden is not None


def test_compiled_loop_kernel_recompiles_per_trial_boundaries(dynamo):
    """(b), the mechanism: the slice loop's python ``ends`` are guarded; other boundaries, same N, raise."""
    decoder, routing = _decoder("loop")
    _hidden(decoder, routing, 20, [8, 20])
    with pytest.raises(FailOnRecompileLimitHit):
        _hidden(decoder, routing, 20, [5, 20])


def test_trainer_refuses_compile_with_the_loop_kernel(tiny_model_path):
    model, tokenizer = load(tiny_model_path)
    with pytest.raises(ConfigError, match="grouped LoRA kernel"):
        PackedTrainer(model, tokenizer, records(), TRIALS[:1], layout="varlen", kernel="loop", fused=True, compile=True)


def _trainer(path, compile):
    model, tokenizer = load(path)
    return PackedTrainer(model, tokenizer, records(), TRIALS[:2], layout="varlen", max_chunk_tokens=4096,
                         kernel="grouped", fused=True, compile=compile)


def test_compiled_trainer_runs_eager_layers_off_the_graphs(tiny_model_path, dynamo):
    """(a) in the trainer: steps without CUDA graphs and ``eval_losses`` (chunk sizes change every
    call) run the eager layer functions -- nothing is compiled, no recompile limit is hit -- and
    give exactly the eager fused trainer's numbers; inside the graph pass the compiled ones run."""
    if not _probe_cpu_grouped_mm():
        pytest.skip("this torch has no CPU torch._grouped_mm")
    compiled, eager = _trainer(tiny_model_path, True), _trainer(tiny_model_path, False)
    assert compiled.fused.compiled and not compiled.cuda_graphs
    for trainer in (compiled, eager):
        trainer.train(max_packed_steps=3)
    assert compiled.history.losses == eager.history.losses
    samples = [{0: compiled.examples[:n], 1: compiled.examples[n:2 * n + 1]} for n in (1, 2, 3, 5, 7)]
    got = [compiled.eval_losses(s) for s in samples]   # 5 chunk sizes: would exceed the limit of 2
    assert got == [eager.eval_losses(s) for s in samples]
    assert graphs() == 0

    from spelltransfer.train.packed.batches import build_chunk, Sequence

    chunk = build_chunk([Sequence(0, e, 1.0) for e in compiled.examples[:3]], 2, "varlen", compiled.pad_id)
    compiled._graph_pass = True    # what step() sets around GraphedChunks.run (capture): compiled layers
    try:
        compiled._forward_loss(chunk)
    finally:
        compiled._graph_pass = False
    assert graphs() > 0
