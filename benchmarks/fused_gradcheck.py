"""Adapter gradients of the fused decoder, eager and compiled, against an fp32 reference (GPU).

    python benchmarks/fused_gradcheck.py [--layers 4] [--device cuda]

Why: a loss-only check can miss a wrong backward (at step 1 every B is zero, so the LoRA forward
is exactly zero whatever the kernel does). Here the adapters are random (B != 0), one packed chunk
goes forward and backward with the answer loss, and every variant's flat adapter gradient is
compared with an fp32 slice-loop reference: bf16 variants should sit at bf16 noise, all alike.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--cpu-compile", action="store_true", help="on CPU, also the compiled variants (slow)")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from spelltransfer.train.packed import fused
    from spelltransfer.train.packed.multi_lora import inject_multi_lora

    dev = args.device
    heads = max(1, args.hidden // 64)
    config = LlamaConfig(vocab_size=49152, hidden_size=args.hidden, intermediate_size=int(args.hidden * 8 / 3) // 64 * 64,
                         num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 3),
                         head_dim=64, rope_theta=100000.0, tie_word_embeddings=True)
    ranks, alphas = [4, 8, 16, 32, 8, 16, 4, 32], [8, 16, 32, 64, 32, 8, 16, 16]
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 80, (args.tokens // 50,), generator=g)
    lengths = lengths[torch.cumsum(lengths, 0) <= args.tokens]
    n = int(lengths.sum())
    ids = torch.randint(3, 49152, (n,), generator=g)
    pos = torch.cat([torch.arange(int(k)) for k in lengths])
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)]).to(torch.int32)
    ends = torch.linspace(0, n, len(ranks) + 1)[1:].long().tolist()
    ends[-1] = n
    scored = torch.randperm(n, generator=g)[: n // 5].sort().values
    targets = torch.randint(3, 49152, (scored.numel(),), generator=g)

    from spelltransfer.train.packed import attention

    def run(dtype, kernel, compile_, only=None):
        attention._state["backend"] = "loop" if dtype == torch.float32 else None  # FlashAttention has no fp32
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dev, dtype)
        weights, routing = inject_multi_lora(model, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                             ranks, alphas, kernel=kernel)
        flat_g = torch.Generator().manual_seed(1)
        for k in range(len(ranks)):
            weights.init_trial(k, k + 1)
        with torch.no_grad():  # B != 0 so the LoRA forward is live
            for b in weights.lora_B:
                b.copy_(torch.randn(b.shape, generator=flat_g).to(dev) * 0.02)
            for k, rank in enumerate(ranks):
                for a, b in zip(weights.lora_A, weights.lora_B):
                    a[k, rank:] = 0
                    b[k, :, rank:] = 0
        decoder = fused.FusedDecoder(model, weights, routing, compile=compile_ and only is None)
        if only == "pre":
            decoder._pre = torch.compile(fused.pre_attention, dynamic=False, fullgraph=True)
        elif only == "post":
            decoder._post = torch.compile(fused.post_attention, dynamic=False, fullgraph=True)
        routing.set_token_ends(ends, torch.tensor(ends, dtype=torch.int32, device=dev))
        hidden = decoder.hidden(ids.to(dev), pos.to(dev), cu.to(dev), int(lengths.max()))
        logits = model.get_output_embeddings()(hidden.index_select(0, scored.to(dev))).float()
        loss = F.cross_entropy(logits, targets.to(dev))
        loss.backward()
        return float(loss), weights.grad.detach().float().clone(), hidden.detach().float()

    ref_loss, ref_grad, ref_hidden = run(torch.float32, "loop", False)
    rows = []
    variants = {"bf16 eager": (torch.bfloat16, "grouped", False),
                "bf16 compiled": (torch.bfloat16, "grouped", True),
                "bf16 compiled pre only": (torch.bfloat16, "grouped", True, "pre"),
                "bf16 compiled post only": (torch.bfloat16, "grouped", True, "post")}
    if dev == "cpu" and not args.cpu_compile:
        variants = {k: v for k, v in variants.items() if "compiled" not in k}
    for name, variant in variants.items():
        try:
            loss, grad, hidden = run(*variant)
            rows.append({"variant": name, "loss": round(loss, 5), "ref_loss": round(ref_loss, 5),
                         "hidden_rel": float((hidden - ref_hidden).norm() / ref_hidden.norm()),
                         "grad_rel": float((grad - ref_grad).norm() / ref_grad.norm()),
                         "grad_norm_ratio": float(grad.norm() / ref_grad.norm())})
        except Exception as error:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            rows.append({"variant": name, "error": f"{type(error).__name__}: {str(error)[:200]}"})
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
