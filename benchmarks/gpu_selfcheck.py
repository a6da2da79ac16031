"""GPU self-check of the packed trainer's two kernels, against references, before any timing.

    python benchmarks/gpu_selfcheck.py

1. ``torch._grouped_mm`` (bf16, 2D x 3D with offsets, forward and backward) vs per-trial slices in fp32.
2. ``varlen_attn`` (causal, GQA by repeated heads, forward and backward) vs SDPA per sequence in fp32.
Prints ``||out - ref|| / ||ref||`` for outputs and gradients; bf16 operands should land near 1e-3..1e-2.
"""

from __future__ import annotations

import inspect
import json
import sys

import torch
import torch.nn.functional as F


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def check_grouped_mm() -> dict:
    torch.manual_seed(0)
    k_trials, d_in, r, n = 8, 576, 32, 4000
    counts = torch.randint(0, 900, (k_trials,))
    counts[2] = 0  # an empty group must work
    counts[-1] = n - counts[:-1].sum().clamp(max=n)
    ends = torch.cumsum(counts, 0)
    n = int(ends[-1])
    x = torch.randn(n, d_in, device="cuda")
    a = torch.randn(k_trials, r, d_in, device="cuda") / d_in ** 0.5
    x_b, a_b = x.bfloat16().requires_grad_(), a.clone().requires_grad_()
    out = torch._grouped_mm(x_b, a_b.bfloat16().transpose(1, 2), offs=ends.to(torch.int32).cuda())
    grad = torch.randn_like(out)
    out.backward(grad)
    x_r, a_r = x.double().requires_grad_(), a.double().requires_grad_()
    pieces, start = [], 0
    for k, end in enumerate(ends.tolist()):
        pieces.append(x_r[start:end] @ a_r[k].T)
        start = end
    ref = torch.cat(pieces)
    ref.backward(grad.double())
    return {"out": rel(out, ref), "grad_x": rel(x_b.grad, x_r.grad), "grad_a": rel(a_b.grad, a_r.grad)}


def check_varlen() -> dict:
    from torch.nn.attention.varlen import varlen_attn

    from spelltransfer.train.packed.attention import _call_varlen

    torch.manual_seed(0)
    lengths = [37, 52, 1, 44, 60, 45]
    heads, d = 9, 64
    n = sum(lengths)
    cu = torch.tensor([0] + list(torch.cumsum(torch.tensor(lengths), 0)), dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(n, heads, d, device="cuda") for _ in range(3))
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    out = _call_varlen(qb, kb, vb, cu, max(lengths), d ** -0.5)
    if isinstance(out, tuple):
        out = out[0]
    grad = torch.randn_like(out)
    out.backward(grad)
    qr, kr, vr = (t.double().requires_grad_() for t in (q, k, v))
    pieces, start = [], 0
    for length in lengths:
        s = slice(start, start + length)
        pieces.append(F.scaled_dot_product_attention(*(t[s].transpose(0, 1)[None] for t in (qr, kr, vr)), is_causal=True)[0].transpose(0, 1))
        start += length
    ref = torch.cat(pieces)
    ref.backward(grad.double())
    return {"signature": str(inspect.signature(varlen_attn)), "out": rel(out, ref), "grad_q": rel(qb.grad, qr.grad),
            "grad_k": rel(kb.grad, kr.grad), "grad_v": rel(vb.grad, vr.grad)}


def main() -> int:
    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__}))
    ok = True
    for name, fn in (("grouped_mm", check_grouped_mm), ("varlen_attn", check_varlen)):
        try:
            result = fn()
            errors = [v for key, v in result.items() if key != "signature"]
            result["pass"] = all(e == e and e < 2e-2 for e in errors)
        except Exception as error:  # report and go on: the trainer falls back to loop / padded
            result = {"pass": False, "error": f"{type(error).__name__}: {error}"}
        ok &= result["pass"]
        print(json.dumps({name: result}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
