"""The fused decoder (train/packed/fused.py) computes what the HF decoder with MultiLoRALinear computes.

CPU, tiny Llama (2 layers, GQA 4/2 heads), fp32, varlen layout, the slice-loop LoRA kernel: per-step
losses of three differently shaped trials and the final adapter weights agree with the HF path to
1e-5 (only the order of floating-point sums differs: q/k/v and gate/up are one matmul here).
``torch.compile`` of the fused layer functions needs fixed shapes (CUDA graphs), so it is checked on
the GPU: ``benchmarks/train_throughput.py --graph-check`` compares compiled, eager-fused and HF-path
losses of the same trials.
"""

from __future__ import annotations

import pytest
import torch

from spelltransfer.errors import ConfigError
from spelltransfer.train.packed import PackedTrainer
from spelltransfer.train.packed.fused import FusedDecoder

from test_packed import TRIALS, load, records

TOL = 1e-5


def train(path, **kwargs):
    model, tokenizer = load(path)
    trainer = PackedTrainer(model, tokenizer, records(), TRIALS, layout="varlen", max_chunk_tokens=4096,
                            base_model_path=path, **kwargs)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def hf_path(tiny_model_path):
    return train(tiny_model_path, fused=False)


def _assert_same(a: PackedTrainer, b: PackedTrainer, tol: float) -> None:
    for k in range(len(TRIALS)):
        assert len(a.history.losses[k]) == len(b.history.losses[k]) == TRIALS[k].max_steps
        diff = max(abs(x - y) for x, y in zip(a.history.losses[k], b.history.losses[k]))
        assert diff < tol, f"trial {k}: losses differ by {diff}"
    rel = (a.weights.flat - b.weights.flat).norm() / b.weights.flat.norm()
    assert rel < tol, f"adapter weights differ (relative {rel})"


def test_fused_is_opt_in(tiny_model_path):
    """Off by default: on the GPU it only paid with torch.compile, whose CUDA gradients are wrong."""
    model, tokenizer = load(tiny_model_path)
    trainer = PackedTrainer(model, tokenizer, records(), TRIALS[:1], layout="varlen", base_model_path=tiny_model_path)
    assert trainer.fused is None
    model, tokenizer = load(tiny_model_path)
    with pytest.raises(ConfigError, match="compile"):
        PackedTrainer(model, tokenizer, records(), TRIALS[:1], layout="varlen", fused=False, compile=True)


def test_fused_matches_hf_decoder(tiny_model_path, hf_path):
    fused = train(tiny_model_path, fused=True)
    assert fused.fused is not None and hf_path.fused is None
    _assert_same(fused, hf_path, TOL)
    assert fused.weights.padding_is_zero()


def test_fused_base_weights_are_views_generation_unchanged(tiny_model_path):
    """After fusing, the HF modules read the concatenated weights: the plain forward is unchanged."""
    model, tokenizer = load(tiny_model_path)
    ids = torch.tensor([[1, 5, 9, 200, 31]])
    before = model(ids).logits
    trainer = PackedTrainer(model, tokenizer, records(), TRIALS[:1], layout="varlen", fused=True)
    layer = trainer.fused.layers[0]
    q = model.model.layers[0].self_attn.q_proj.base.weight
    assert q.data_ptr() == layer["w_qkv"].data_ptr()
    from spelltransfer.train.packed import attention

    attention.set_attention(model, "sdpa")
    trainer.routing.set_row_counts([1])
    after = model(ids).logits
    assert torch.allclose(before, after, atol=1e-6)  # B starts at zero: the adapter adds nothing yet


def test_fused_refuses_padded_layout(tiny_model_path):
    model, tokenizer = load(tiny_model_path)
    with pytest.raises(ConfigError, match="fused"):
        PackedTrainer(model, tokenizer, records(), TRIALS[:1], layout="padded", fused=True)


def test_supports_names_what_is_missing(tiny_model_path):
    from spelltransfer.train.packed.multi_lora import inject_multi_lora

    model, _ = load(tiny_model_path)
    inject_multi_lora(model, ["q_proj", "v_proj"], [4], [8], kernel="loop")
    assert "k_proj" in FusedDecoder.supports(model)
