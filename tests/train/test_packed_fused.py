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


def _lora_operands(dtype, n=37, d_in=24, r=8, d_out=16, ends=(5, 5, 20, 37)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    a = torch.randn(len(ends), r, d_in, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    b = torch.randn(len(ends), d_out, r, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    grad = torch.randn(n, d_out, generator=g, dtype=torch.float64).to(dtype)
    return x, a, b, grad, list(ends), torch.tensor(ends, dtype=torch.int32)


def test_opaque_lora_op_matches_the_slice_loop():
    """``lora_grouped`` (the grouped LoRA pair as one opaque op, for torch.compile -- issue 14): fp64
    gradcheck of its backward formulas (loop body); fp32 forward/backward equal autograd through
    the slice loop (grouped-GEMM body where this torch has a CPU one); a trial without tokens
    gets zero gradient; the op's fake/autograd registration passes ``torch.library.opcheck``."""
    from spelltransfer.train.packed.multi_lora import lora_delta, lora_grouped

    x, a, b, _, _, offs = _lora_operands(torch.float64, n=9, d_in=4, r=2, d_out=3, ends=(2, 2, 9))
    assert torch.autograd.gradcheck(lambda x, a, b: lora_grouped(x, a, b, offs), (x, a, b))
    x, a, b, grad, ends, offs = _lora_operands(torch.float32)
    out = lora_grouped(x, a, b, offs)
    got = torch.autograd.grad(out, (x, a, b), grad)
    ref_out = lora_delta(x, a, b, None, ends, "loop")
    ref = torch.autograd.grad(ref_out, (x, a, b), grad)
    assert torch.allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for name, g_got, g_ref in zip(("x", "a", "b"), got, ref):
        assert torch.allclose(g_got, g_ref, atol=1e-4, rtol=1e-5), name
    assert got[1][1].abs().sum() == 0 and got[2][1].abs().sum() == 0  # trial 1 has no tokens
    torch.library.opcheck(lora_grouped, (x, a, b, offs))


def test_fused_decoder_opaque_grouped_kernel():
    """The fused decoder with the opaque op computes what it computes with the slice loop; the op
    is used when compiled unless ``opaque_grouped_mm=False`` (``layer_kernel``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from spelltransfer.train.packed.multi_lora import _probe_cpu_grouped_mm, inject_multi_lora

    if not _probe_cpu_grouped_mm():
        pytest.skip("this torch has no CPU torch._grouped_mm")
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    ids = torch.randint(3, 64, (30,), generator=torch.Generator().manual_seed(0))
    pos = torch.cat([torch.arange(12), torch.arange(18)])
    cu = torch.tensor([0, 12, 30], dtype=torch.int32)

    def run(kernel, opaque):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        weights, routing = inject_multi_lora(model, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                             [4, 8, 2], [8, 8, 4], kernel=kernel)
        for k in range(3):
            weights.init_trial(k, k + 1)
        with torch.no_grad():
            for b in weights.lora_B:
                b.normal_(0, 0.1, generator=torch.Generator().manual_seed(b.shape[1]))
        decoder = FusedDecoder(model, weights, routing, opaque_grouped_mm=opaque)
        routing.set_token_ends([10, 10, 30])  # trial 1: no tokens
        hidden = decoder.hidden(ids, pos, cu, 18)
        hidden.square().mean().backward()
        return decoder, hidden.detach(), weights.grad.clone()

    decoder, hidden, grad = run("grouped", True)
    assert decoder.layer_kernel == "grouped_op"
    _, ref_hidden, ref_grad = run("loop", None)
    assert torch.allclose(hidden, ref_hidden, atol=1e-5, rtol=1e-5)
    assert ((grad - ref_grad).norm() / ref_grad.norm()) < 1e-5 and ref_grad.norm() > 0
    assert grad[1].abs().sum() == 0

    decoder.opaque_grouped_mm = None
    assert decoder.layer_kernel == "grouped"          # eager: plain torch._grouped_mm
    decoder.enable_compile()                          # wraps lazily; nothing compiles here
    assert decoder.layer_kernel == "grouped_op"       # compiled: the opaque op by default
    decoder.opaque_grouped_mm = False
    assert decoder.layer_kernel == "grouped"
    decoder.disable_compile()
