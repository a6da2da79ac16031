"""The packed trainer's decoder as two small functions per layer, written to be fused by ``torch.compile``.

Why: profiled on an H100 (docs/performance.md section 3), the HF decoder with ``MultiLoRALinear``
spends ~50 % of the packed step's GPU time in unfused element-wise kernels (fp32 RMSNorm casts,
RoPE, SiLU, residual and LoRA adds, fp32->bf16 adapter casts) and ~21 % in 14 skinny grouped
GEMMs per layer, against ~10 % in the base model's matmuls. Here each Llama layer is

    pre_attention:  RMSNorm -> one [q|k|v] matmul + one LoRA pair for q, k and v -> RoPE
    attention:      variable-length FlashAttention (not compiled)
    post_attention: o_proj + LoRA, residual, RMSNorm, one [gate|up] matmul + one LoRA pair, SiLU*up,
                    down_proj + LoRA, residual

so the element-wise chain compiles into a few kernels and the LoRA products are 8 grouped GEMMs
per layer instead of 14: the A matrices of q, k, v (and of gate, up) are stacked into one
``[K, 3r, in]`` operand, and their B matrices into one block-diagonal ``[K, 3r, out_q+out_k+out_v]``
operand (its zero blocks get no gradient: they are built from constants, not parameters).

The base weights are concatenated once ([q|k|v] and [gate|up]) and the HF modules' weights are
made views of them, so memory is not doubled and HF's forward (generation) sees the same numbers.
The adapters stay the ``MultiLoRAWeights`` leaf views: autograd accumulates into the same flat
gradient buffer the optimizer reads, so everything after the forward is unchanged.

Compiled, the grouped LoRA products run as the opaque ``lora_grouped`` op (multi_lora.py; the
``opaque_grouped_mm`` argument), so Inductor compiles the element-wise chain around GEMMs it does
not lower or re-stride -- one suspect of the compiled path's wrong CUDA gradients (issue 14,
docs/performance.md section 7; ``benchmarks/fused_gradcheck.py`` tells the variants apart).

The same arithmetic as HF's ``LlamaDecoderLayer`` (checked on CPU in fp32 against the HF path,
``tests/train/test_packed_fused.py``): RMSNorm in fp32 then cast, ``rotate_half`` RoPE, GQA by
repeating k/v heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spelltransfer.train.packed import attention
from spelltransfer.train.packed.multi_lora import MultiLoRALinear, MultiLoRAWeights, Routing, lora_delta

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def lora_operands(a_parts, b_parts, scales, dtype):
    """The grouped GEMMs' operands for one or several projections sharing an input.

    ``a_parts[i]``: [K, R, in], ``b_parts[i]``: [K, out_i, R] (fp32 views of the flat buffer).
    Returns A stacked to [K, P*R, in] and B block-diagonal [K, sum out_i, P*R] (scale folded in),
    both in ``dtype``. Run eagerly, before the compiled layer functions: the adapters are views of
    one flat buffer, and fresh operands keep aliased inputs out of ``torch.compile``.
    """
    n_trials, rank = a_parts[0].shape[0], a_parts[0].shape[1]
    a = (a_parts[0] if len(a_parts) == 1 else torch.cat(a_parts, dim=1)).to(dtype)
    scale = scales.view(-1, 1, 1)
    if len(b_parts) == 1:
        return a, (b_parts[0] * scale).to(dtype)
    outs = [p.shape[1] for p in b_parts]
    rows = []
    for i, part in enumerate(b_parts):
        pieces = []
        if i:
            pieces.append(part.new_zeros(n_trials, outs[i], rank * i))
        pieces.append(part * scale)
        if i < len(b_parts) - 1:
            pieces.append(part.new_zeros(n_trials, outs[i], rank * (len(b_parts) - 1 - i)))
        rows.append(torch.cat(pieces, dim=2))
    return a, torch.cat(rows, dim=1).to(dtype)


def pre_attention(x, ln_w, w_qkv, a_qkv, b_qkv, offsets, cos, sin, *,
                  eps: float, n_heads: int, n_kv: int, head_dim: int, kernel: str, ends=None):
    """x [N, d] -> q, k, v [N, H, D] (RoPE applied, k/v repeated to H heads)."""
    h = _rms_norm(x, ln_w, eps)
    qkv = h @ w_qkv.T + lora_delta(h, a_qkv, b_qkv, offsets, ends, kernel)
    q_size, kv_size = n_heads * head_dim, n_kv * head_dim
    q = qkv[:, :q_size].view(-1, n_heads, head_dim)
    k = qkv[:, q_size:q_size + kv_size].view(-1, n_kv, head_dim)
    v = qkv[:, q_size + kv_size:].view(-1, n_kv, head_dim)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    if n_heads != n_kv:
        k = k.repeat_interleave(n_heads // n_kv, dim=1)
        v = v.repeat_interleave(n_heads // n_kv, dim=1)
    return q.contiguous(), k.contiguous(), v.contiguous()


def post_attention(x, attn, w_o, a_o, b_o, ln_w, w_gu, a_gu, b_gu, w_down, a_d, b_d, offsets, *,
                   eps: float, intermediate: int, kernel: str, ends=None):
    """Residual stream after o_proj and the MLP, each with its trial's LoRA."""
    attn = attn.reshape(attn.shape[0], -1)
    x = x + attn @ w_o.T + lora_delta(attn, a_o, b_o, offsets, ends, kernel)
    h = _rms_norm(x, ln_w, eps)
    gu = h @ w_gu.T + lora_delta(h, a_gu, b_gu, offsets, ends, kernel)
    m = F.silu(gu[:, :intermediate]) * gu[:, intermediate:]
    return x + m @ w_down.T + lora_delta(m, a_d, b_d, offsets, ends, kernel)


class FusedDecoder:
    """Runs a llama-style model's decoder for packed training (see the module docstring)."""

    def __init__(self, model, weights: MultiLoRAWeights, routing: Routing, compile: bool = False,
                 opaque_grouped_mm: bool | None = None):
        """``opaque_grouped_mm``: run the grouped LoRA products as the opaque ``lora_grouped`` op
        (multi_lora.py) instead of ``torch._grouped_mm`` inside the layer functions; None (default):
        only when compiled, so Inductor never lowers or re-strides the grouped GEMMs (issue 14)."""
        body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        config = model.config
        self.body, self.weights, self.routing = body, weights, routing
        self.n_heads = config.num_attention_heads
        self.n_kv = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.intermediate = config.intermediate_size
        self.eps = float(config.rms_norm_eps)
        self.scaling = self.head_dim ** -0.5
        slot_index = {slot.name: i for i, slot in enumerate(weights.slots)}
        prefix = next(name for name, module in model.named_modules() if module is body)
        self.layers = []
        for i, layer in enumerate(body.layers):
            attn, mlp = layer.self_attn, layer.mlp
            mods = {name: getattr(attn, name) for name in ATTN} | {name: getattr(mlp, name) for name in MLP}
            kernel = {m.kernel for m in mods.values()}
            if len(kernel) != 1:
                raise ValueError("fused decoder: every projection must use the same LoRA kernel")
            idx = {name: slot_index[f"{prefix}.layers.{i}.{'self_attn' if name in ATTN else 'mlp'}.{name}"]
                   for name in mods}
            w_qkv = _concat_base([mods["q_proj"], mods["k_proj"], mods["v_proj"]])
            w_gu = _concat_base([mods["gate_proj"], mods["up_proj"]])
            self.layers.append({"ln1": layer.input_layernorm.weight, "ln2": layer.post_attention_layernorm.weight,
                                "w_qkv": w_qkv, "w_o": mods["o_proj"].base.weight, "w_gu": w_gu,
                                "w_down": mods["down_proj"].base.weight, "idx": idx})
        self.kernel = kernel.pop()
        self.opaque_grouped_mm = opaque_grouped_mm
        self._pre, self._post = pre_attention, post_attention
        self.compiled = False
        if compile:
            self.enable_compile()

    @classmethod
    def supports(cls, model) -> str | None:
        """None if the model can run fused, else why not."""
        body = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
        layers = getattr(body, "layers", None)
        if layers is None or getattr(model.config, "model_type", "") not in ("llama", "mistral", "qwen2", "smollm3"):
            return f"not a llama-style decoder ({getattr(model.config, 'model_type', '?')})"
        for layer in layers:
            attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
            if attn is None or mlp is None:
                return "layers without self_attn/mlp"
            for owner, names in ((attn, ATTN), (mlp, MLP)):
                for name in names:
                    module = getattr(owner, name, None)
                    if not isinstance(module, MultiLoRALinear):
                        return f"{name} is not adapted (the fused path needs LoRA on q,k,v,o,gate,up,down)"
                    if module.base.bias is not None:
                        return f"{name} has a bias"
        if getattr(model.config, "hidden_act", "silu") != "silu":
            return f"activation {model.config.hidden_act}"
        rope = getattr(model.config, "rope_parameters", None) or getattr(model.config, "rope_scaling", None) or {}
        if (rope.get("rope_type") or rope.get("type") or "default") != "default":
            return f"rope type {rope.get('rope_type') or rope.get('type')}"
        return None

    def enable_compile(self) -> None:
        """``torch.compile`` both layer functions (one graph each, shared by all layers: same shapes).

        ``dynamic=False``: every new token count N (and, with the slice-loop kernel, every new set of
        trial boundaries: its python ``ends`` are guarded) is a Dynamo recompile, and past
        ``torch._dynamo.config.recompile_limit`` (8) the call raises (``fullgraph=True``). So the
        compiled functions are for fixed shapes -- the trainer's CUDA-graph pass -- and callers with
        changing shapes pass ``hidden(..., eager=True)`` (``PackedTrainer`` does outside the graphs)."""
        self._pre = torch.compile(pre_attention, dynamic=False, fullgraph=True)
        self._post = torch.compile(post_attention, dynamic=False, fullgraph=True)
        self.compiled = True

    def disable_compile(self) -> None:
        self._pre, self._post, self.compiled = pre_attention, post_attention, False

    @property
    def layer_kernel(self) -> str:
        """The LoRA kernel the layer functions run: ``grouped_op`` for the grouped kernel when opaque."""
        return self._layer_kernel(self.compiled)

    def _layer_kernel(self, compiled: bool) -> str:
        opaque = compiled if self.opaque_grouped_mm is None else self.opaque_grouped_mm
        return "grouped_op" if self.kernel == "grouped" and opaque else self.kernel

    def hidden(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cu: torch.Tensor, max_len: int,
               eager: bool = False) -> torch.Tensor:
        """Final-norm hidden states [N, d] of one packed row (``input_ids``/``position_ids`` [N]).

        ``eager=True``: the uncompiled layer functions (and the eager kernel choice) even when
        compiled -- for shapes other than the fixed ones the compiled functions were built for."""
        w = self.weights
        x = self.body.embed_tokens(input_ids)
        cos, sin = self.body.rotary_emb(x, position_ids.unsqueeze(0))
        cos, sin = cos[0], sin[0]
        n = input_ids.shape[0]
        offsets = self.routing.offsets(n, x.device) if self.kernel == "grouped" else None
        ends = None if self.kernel == "grouped" else self.routing.ends(n)
        a, b, scales, dt = w.lora_A, w.lora_B, w.scales, x.dtype
        pre, post = (pre_attention, post_attention) if eager else (self._pre, self._post)
        kernel = self._layer_kernel(self.compiled and not eager)
        for layer in self.layers:
            i = layer["idx"]
            a_qkv, b_qkv = lora_operands([a[i["q_proj"]], a[i["k_proj"]], a[i["v_proj"]]],
                                         [b[i["q_proj"]], b[i["k_proj"]], b[i["v_proj"]]], scales, dt)
            a_o, b_o = lora_operands([a[i["o_proj"]]], [b[i["o_proj"]]], scales, dt)
            a_gu, b_gu = lora_operands([a[i["gate_proj"]], a[i["up_proj"]]], [b[i["gate_proj"]], b[i["up_proj"]]], scales, dt)
            a_d, b_d = lora_operands([a[i["down_proj"]]], [b[i["down_proj"]]], scales, dt)
            q, k, v = pre(x, layer["ln1"], layer["w_qkv"], a_qkv, b_qkv, offsets, cos, sin,
                                eps=self.eps, n_heads=self.n_heads, n_kv=self.n_kv, head_dim=self.head_dim,
                                kernel=kernel, ends=ends)
            out = attention.attend(q, k, v, cu, max_len, self.scaling)
            x = post(x, out, layer["w_o"], a_o, b_o, layer["ln2"], layer["w_gu"], a_gu, b_gu, layer["w_down"],
                           a_d, b_d, offsets, eps=self.eps, intermediate=self.intermediate, kernel=kernel, ends=ends)
        return self.body.norm(x)


def _concat_base(modules: list[MultiLoRALinear]) -> torch.Tensor:
    """One [sum out, in] weight; each module's base weight becomes a view of its rows."""
    weight = torch.cat([m.base.weight.detach() for m in modules], dim=0).contiguous()
    start = 0
    for m in modules:
        rows = m.base.weight.shape[0]
        m.base.weight = nn.Parameter(weight[start:start + rows], requires_grad=False)
        start += rows
    return weight
