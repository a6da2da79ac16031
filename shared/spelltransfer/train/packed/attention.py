"""Attention over a flat stream of packed sequences: no padding, no cross-sequence attention.

The packed trainer feeds the model one row ``[1, N]`` holding every sequence of a chunk end to
end, with ``position_ids`` restarting at each sequence and ``cu_seq_lens_q/k`` (cumulative
lengths) passed through the model's ``**kwargs`` to this attention function. On CUDA it calls
PyTorch's variable-length FlashAttention (``torch.nn.attention.varlen.varlen_attn``); elsewhere
(CPU tests) it runs causal SDPA sequence by sequence, the exact reference.

Registered with transformers as ``spelltransfer_varlen``; a name transformers' mask registry
does not know makes it skip building any mask (an N x N mask would not fit).
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

ATTENTION_NAME = "spelltransfer_varlen"
_state = {"backend": None}


def _varlen_fn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def varlen_available(device) -> bool:
    """CUDA, PyTorch's varlen attention present, and a small causal forward/backward matches SDPA."""
    device = torch.device(device)
    return device.type == "cuda" and _varlen_fn() is not None and _probe_varlen(str(device))


def varlen_supports_empty(device) -> bool:
    """Zero-length sequences in ``cu_seqlens`` work (the CUDA-graph layout pads with them)."""
    device = torch.device(device)
    return varlen_available(device) and _probe_varlen(str(device), True)


@functools.lru_cache(maxsize=None)
def _probe_varlen(device: str, with_empty: bool = False) -> bool:
    try:
        generator = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(12, 2, 64, generator=generator).to(device, torch.bfloat16).requires_grad_() for _ in range(3))
        cu = torch.tensor([0, 5, 12] + ([12, 12] if with_empty else []), dtype=torch.int32, device=device)
        out = _call_varlen(q, k, v, cu, 7, 0.125)
        out = out[0] if isinstance(out, tuple) else out
        out.float().square().sum().backward()
        ref = torch.cat([F.scaled_dot_product_attention(*(t[a:b].float().transpose(0, 1)[None] for t in (q, k, v)),
                                                        is_causal=True, scale=0.125)[0].transpose(0, 1)
                         for a, b in ((0, 5), (5, 12))])
        return bool(((out.float() - ref).norm() / ref.norm()) < 2e-2) and q.grad is not None and bool(torch.isfinite(q.grad).all())
    except Exception:  # noqa: BLE001 - any failure means: use the padded layout
        return False


def _call_varlen(q, k, v, cu, max_len, scale):
    fn = _varlen_fn()
    params = inspect.signature(fn).parameters
    kwargs = {"scale": scale}
    if "is_causal" in params:        # torch 2.10/2.11 spelling
        kwargs["is_causal"] = True
    else:                            # later releases: causal = window (-1, 0)
        kwargs["window_size"] = (-1, 0)
    return fn(q, k, v, cu, cu, max_len, max_len, **kwargs)


def packed_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: q/k/v ``[1, H, N, D]`` -> ``([1, N, H, D], None)``."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        raise RuntimeError(f"{ATTENTION_NAME} attention needs cu_seq_lens_q (the packed trainer passes it)")
    max_len = int(kwargs.get("max_length_q") or 0)
    if query.shape[0] != 1:
        raise RuntimeError(f"{ATTENTION_NAME} expects one packed row, got batch {query.shape[0]}")
    n_rep = query.shape[1] // key.shape[1]
    q = query[0].transpose(0, 1)           # [N, H, D]
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    if n_rep > 1:                           # GQA: kv head i serves q heads i*n_rep .. (i+1)*n_rep-1
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
    return attend(q, k, v, cu, max_len, scaling).unsqueeze(0), None


def attend(q, k, v, cu, max_len: int, scaling: float | None):
    """Causal attention within each sequence of a packed stream: q/k/v ``[N, H, D]`` -> ``[N, H, D]``.

    Variable-length FlashAttention on CUDA; elsewhere causal SDPA sequence by sequence (the reference).
    """
    if q.is_cuda and _state["backend"] != "loop" and _varlen_fn() is not None:
        out = _call_varlen(q.contiguous(), k.contiguous(), v.contiguous(), cu, max_len, scaling)
        return out[0] if isinstance(out, tuple) else out
    bounds = cu.tolist()
    pieces = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            qs, ks, vs = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            pieces.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scaling)[0].transpose(0, 1))
    return torch.cat(pieces)


def register(backend: str | None = None) -> str:
    """Register the attention function with transformers; ``backend='loop'`` forces the reference."""
    from transformers import AttentionInterface

    _state["backend"] = backend
    AttentionInterface.register(ATTENTION_NAME, packed_attention_forward)
    return ATTENTION_NAME


def set_attention(model, name: str) -> None:
    """Switch a loaded model's attention implementation (training: packed; generation: sdpa)."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        try:
            setter(name)
            return
        except (ValueError, TypeError, ImportError, AttributeError):
            pass
    model.config._attn_implementation = name
    for sub in model.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = name
