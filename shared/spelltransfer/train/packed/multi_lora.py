"""K LoRA adapters over one frozen base model, each applied to its own tokens of a shared batch.

Why: a 135M-parameter LoRA trial leaves an H100 idle (launch-bound at the seed's batch sizes).
Stacking K trials' tokens into one batch makes every base-model matmul K times larger while each
trial still sees only its own adapter:

    y[t] = W x[t] + (alpha_k / r_k) * B_k A_k x[t]      for every token t owned by trial k

Tokens are laid out sorted by trial, so "which adapter" is K contiguous token ranges
(``offsets``), and the two LoRA products run as grouped GEMMs (``torch._grouped_mm``, the
MoE kernel) over all trials at once -- or, on devices/dtypes without it, as a loop of slices.

Ranks differ between trials: every adapter is stored at ``r_max`` with the rows of A and the
columns of B beyond the trial's own ``r`` at zero. Those entries get exactly zero gradient (the
gradient of A's row j is scaled by B's column j, and vice versa), so under AdamW without weight
decay on zeros they stay zero and the trial is an r-rank LoRA; ``export_adapter`` writes only its
first ``r`` rows/columns, a standard PEFT adapter.

All adapters' weights live in one fp32 buffer ``flat[K, P]`` (and its gradient in ``grad[K, P]``):
each module's A and B are leaf parameters that are *views* of it, with ``.grad`` pre-set to views of
the gradient buffer, so autograd accumulates straight into it and the optimizer, gradient clipping
and per-trial norms are a handful of kernels over two tensors rather than thousands of small ones.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spelltransfer.errors import ConfigError

KERNELS = ("grouped", "loop")


def grouped_mm_available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """``torch._grouped_mm`` runs bf16 on CUDA (sm90); elsewhere the slice loop is used.

    Probed once per device with a small forward and backward against the slice loop, so a
    build whose kernel is missing or wrong falls back instead of training on bad numbers.
    """
    device = torch.device(device)
    if not hasattr(torch, "_grouped_mm") or device.type != "cuda" or dtype != torch.bfloat16:
        return False
    return _probe_grouped_mm(str(device))


@functools.lru_cache(maxsize=None)
def _probe_grouped_mm(device: str) -> bool:
    try:
        generator = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(40, 64, generator=generator).to(device, torch.bfloat16).requires_grad_()
        a = torch.randn(3, 16, 64, generator=generator).to(device).requires_grad_()
        offs = torch.tensor([10, 10, 40], dtype=torch.int32, device=device)
        out = torch._grouped_mm(x, a.to(torch.bfloat16).transpose(1, 2), offs=offs)
        out.float().square().sum().backward()
        ref = torch.cat([x[:10].float() @ a[0].T, x[10:40].float() @ a[2].T])
        good = bool(((out.float() - ref).norm() / ref.norm()) < 2e-2) and a.grad is not None and bool(a.grad[1].abs().sum() == 0)
        return good and bool(torch.isfinite(a.grad).all())
    except Exception:  # noqa: BLE001 - any failure means: use the loop
        return False


@dataclass(frozen=True)
class AdapterSlot:
    """One adapted linear layer: its module path in the base model and its shape."""

    name: str
    in_features: int
    out_features: int


class Routing:
    """Which tokens belong to which trial, for the current forward pass.

    Two forms: explicit token ranges (training: a flat token stream cut into trials), or rows
    per trial (generation: a [rows, T] batch whose rows are grouped by trial; T changes every
    decoding step, so the token ranges are derived from the input's shape).
    """

    def __init__(self, n_trials: int):
        self.n_trials = n_trials
        self._token_ends: list[int] | None = None
        self._row_counts: list[int] | None = None
        self._cache: dict[tuple[int, str], torch.Tensor] = {}

    def set_token_ends(self, ends: list[int], device_offsets: torch.Tensor | None = None) -> None:
        """``ends[k]`` = end (exclusive) of trial k's tokens; trials are contiguous and in order.

        ``device_offsets``: the same ends already on the device as int32 (copied without a stream
        sync by the caller); otherwise they are copied on first use, which waits for the GPU.
        """
        if len(ends) != self.n_trials or any(b < a for a, b in zip([0] + ends[:-1], ends)):
            raise ValueError(f"token ends must be {self.n_trials} non-decreasing counts (got {ends})")
        self._token_ends, self._row_counts, self._cache = list(ends), None, {}
        if device_offsets is not None:
            self._cache[(ends[-1], str(device_offsets.device))] = device_offsets

    def set_row_counts(self, counts: list[int]) -> None:
        if len(counts) != self.n_trials or any(c < 0 for c in counts):
            raise ValueError(f"row counts must be {self.n_trials} counts >= 0 (got {counts})")
        self._row_counts, self._token_ends, self._cache = list(counts), None, {}

    def ends(self, n_tokens: int) -> list[int]:
        if self._token_ends is not None:
            if self._token_ends[-1] != n_tokens:
                raise RuntimeError(f"routing covers {self._token_ends[-1]} tokens but the layer got {n_tokens}")
            return self._token_ends
        if self._row_counts is None:
            raise RuntimeError("no routing set: call set_token_ends or set_row_counts before the forward pass")
        rows = sum(self._row_counts)
        if rows == 0 or n_tokens % rows:
            raise RuntimeError(f"{n_tokens} tokens do not split into {rows} rows")
        per_row = n_tokens // rows
        ends, total = [], 0
        for count in self._row_counts:
            total += count * per_row
            ends.append(total)
        return ends

    def offsets(self, n_tokens: int, device) -> torch.Tensor:
        key = (n_tokens, str(device))
        if key not in self._cache:
            self._cache[key] = torch.tensor(self.ends(n_tokens), dtype=torch.int32, device=device)
        return self._cache[key]


class MultiLoRAWeights(nn.Module):
    """The K adapters' weights: one flat fp32 buffer, per-module parameter views, ranks, scales."""

    def __init__(self, slots: list[AdapterSlot], ranks: list[int], alphas: list[float], device, r_multiple: int = 8):
        super().__init__()
        if not slots:
            raise ConfigError("lora.target_modules: no linear layer of the model matched")
        if len(ranks) != len(alphas) or not ranks:
            raise ConfigError("trials: need one rank and one alpha per trial")
        self.slots = list(slots)
        self.ranks = [int(r) for r in ranks]
        self.alphas = [float(a) for a in alphas]
        # Rounded up so grouped-GEMM strides stay 16-byte aligned in bf16.
        self.r_max = int(math.ceil(max(self.ranks) / r_multiple) * r_multiple)
        n_trials = len(ranks)
        sizes = [self.r_max * s.in_features + s.out_features * self.r_max for s in slots]
        self.flat = torch.zeros(n_trials, sum(sizes), dtype=torch.float32, device=device)
        self.grad = torch.zeros_like(self.flat)
        self.register_buffer("scales", torch.tensor([a / r for a, r in zip(self.alphas, self.ranks)],
                                                    dtype=torch.float32, device=device), persistent=False)
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        offset = 0
        for slot in slots:
            a_size, b_size = self.r_max * slot.in_features, slot.out_features * self.r_max
            self.lora_A.append(self._view_param(offset, (self.r_max, slot.in_features)))
            offset += a_size
            self.lora_B.append(self._view_param(offset, (slot.out_features, self.r_max)))
            offset += b_size

    def _view_param(self, offset: int, shape: tuple[int, int]) -> nn.Parameter:
        n = shape[0] * shape[1]
        param = nn.Parameter(self.flat[:, offset:offset + n].view(self.flat.shape[0], *shape))
        param.grad = self.grad[:, offset:offset + n].view(self.flat.shape[0], *shape)
        if param.data_ptr() != self.flat[:, offset:].data_ptr():
            raise RuntimeError("adapter parameter is not a view of the flat buffer")
        return param

    @property
    def n_trials(self) -> int:
        return self.flat.shape[0]

    def zero_grad(self) -> None:
        self.grad.zero_()
        for p in list(self.lora_A) + list(self.lora_B):
            if p.grad is None or p.grad.data_ptr() == 0:
                raise RuntimeError("an adapter gradient lost its view of the flat buffer")

    def init_trial(self, k: int, seed: int) -> None:
        """Initialise trial k exactly as PEFT does after ``torch.manual_seed(seed)``.

        ``get_peft_model`` walks the target modules in order and, for each, builds
        ``nn.Linear(in, r)`` and ``nn.Linear(r, out)`` (their default init draws from the CPU
        RNG), then re-draws A with ``kaiming_uniform_(a=sqrt(5))`` and zeroes B. Replaying those
        draws on a private generator gives the same A, so a packed trial starts where the hf
        backend's run with the same seed starts.
        """
        generator = torch.Generator().manual_seed(seed)
        r = self.ranks[k]
        with torch.no_grad():
            for slot, a_param, b_param in zip(self.slots, self.lora_A, self.lora_B):
                scratch_a = torch.empty(r, slot.in_features)
                scratch_b = torch.empty(slot.out_features, r)
                _kaiming_uniform(scratch_a, generator)   # nn.Linear(in, r).reset_parameters()
                _kaiming_uniform(scratch_b, generator)   # nn.Linear(r, out).reset_parameters()
                _kaiming_uniform(scratch_a, generator)   # PEFT's reset_lora_parameters
                a_param[k].zero_()
                a_param[k, :r].copy_(scratch_a)
                b_param[k].zero_()

    def trial_state(self, k: int) -> dict[str, torch.Tensor]:
        """Trial k's weights at its own rank, keyed by module name (``name.lora_A`` / ``name.lora_B``)."""
        r = self.ranks[k]
        out = {}
        for slot, a_param, b_param in zip(self.slots, self.lora_A, self.lora_B):
            out[f"{slot.name}.lora_A"] = a_param.detach()[k, :r].clone()
            out[f"{slot.name}.lora_B"] = b_param.detach()[k, :, :r].clone()
        return out

    def padding_is_zero(self) -> bool:
        """The rows/columns beyond each trial's rank are still exactly zero."""
        for k, r in enumerate(self.ranks):
            for a_param, b_param in zip(self.lora_A, self.lora_B):
                if a_param.detach()[k, r:].abs().sum() != 0 or b_param.detach()[k, :, r:].abs().sum() != 0:
                    return False
        return True


def _kaiming_uniform(tensor: torch.Tensor, generator: torch.Generator) -> None:
    """``nn.init.kaiming_uniform_(tensor, a=sqrt(5))`` drawn from ``generator``."""
    fan_in = tensor.shape[1]
    gain = math.sqrt(2.0 / (1 + 5))
    bound = math.sqrt(3.0) * gain / math.sqrt(fan_in)
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)


class MultiLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus, per token, the LoRA delta of the trial that owns the token."""

    def __init__(self, base: nn.Linear, weights: MultiLoRAWeights, index: int, routing: Routing, kernel: str):
        super().__init__()
        if kernel not in KERNELS:
            raise ConfigError(f"kernel: must be one of {', '.join(KERNELS)} (got {kernel!r})")
        self.base = base
        self.index = index
        self.kernel = kernel
        # Plain attributes, not submodules: the weights are registered once, on the packed model.
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "_routing", routing)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self):  # code that inspects layer.weight (dtype, device) sees the base weight
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        weights, routing = self._weights, self._routing
        dtype = y.dtype
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)
        a = weights.lora_A[self.index].to(dtype)                                   # [K, r, in]
        b = (weights.lora_B[self.index] * weights.scales.view(-1, 1, 1)).to(dtype)  # [K, out, r], scale folded in
        n = x2.shape[0]
        if self.kernel == "grouped":
            delta = lora_delta(x2, a, b, routing.offsets(n, x2.device), None, self.kernel)
        else:
            delta = lora_delta(x2, a, b, None, routing.ends(n), self.kernel)
        return y + delta.view(y.shape)


def lora_delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor | None,
               ends: list[int] | None, kernel: str) -> torch.Tensor:
    """``x @ A_k^T @ B_k^T`` for the tokens of each trial k.

    ``x`` [N, in] sorted by trial; ``a`` [K, r, in], ``b`` [K, out, r] (scale folded in), all in
    one dtype. ``grouped``: two grouped GEMMs over the trials' token ``offsets`` (int32 ends on
    the device); ``grouped_op``: the same GEMMs inside the opaque ``lora_grouped`` op (for
    ``torch.compile``, see below); ``loop``: one pair of matmuls per trial over the token ``ends``.
    """
    if kernel == "grouped":
        h = torch._grouped_mm(x, a.transpose(1, 2), offs=offsets)
        return torch._grouped_mm(h, b.transpose(1, 2), offs=offsets)
    if kernel == "grouped_op":
        return lora_grouped(x, a, b, offsets)
    pieces, start = [], 0
    for k, end in enumerate(ends):
        if end > start:
            pieces.append((x[start:end] @ a[k].T) @ b[k].T)
        start = end
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


# --- the grouped LoRA product as one opaque op -------------------------------------------------
#
# Under ``torch.compile`` Inductor lowers ``aten._grouped_mm`` itself (on sm90 it may pick its own
# Triton grouped-GEMM template, and it decides the strides of the operands it hands the kernel),
# and AOTAutograd traces ``_grouped_mm``'s backward into the joint graph. ``lora_grouped`` keeps the
# whole pair (forward: two grouped GEMMs; backward: four) out of Inductor's hands: the compiled
# graph calls it like a library function, with contiguous operands, the same kernels eager runs.
# Off the GPU (and for fp64, which ``_grouped_mm`` lacks) its body is the slice loop.


def _grouped_ok(t: torch.Tensor) -> bool:
    """The op's body uses ``torch._grouped_mm`` (else the slice loop): CUDA bf16 (what
    ``grouped_mm_available`` admits), CPU bf16/fp32 where this torch has a CPU kernel."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if t.is_cuda:
        return t.dtype == torch.bfloat16
    return t.device.type == "cpu" and t.dtype in (torch.bfloat16, torch.float32) and _probe_cpu_grouped_mm()


@functools.lru_cache(maxsize=None)
def _probe_cpu_grouped_mm() -> bool:
    try:
        x, w = torch.ones(4, 8), torch.ones(2, 8, 8)
        out = torch._grouped_mm(x, w, offs=torch.tensor([2, 4], dtype=torch.int32))
        grad = torch._grouped_mm(x.t(), x, offs=torch.tensor([2, 4], dtype=torch.int32))
        return bool((out == 8).all()) and tuple(grad.shape) == (2, 8, 8) and bool((grad == 2).all())
    except Exception:  # noqa: BLE001 - this torch has no CPU grouped GEMM: the loop
        return False


def _groups(offsets: torch.Tensor):
    start = 0
    for k, end in enumerate(offsets.tolist()):
        yield k, start, end
        start = end


def _c(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_contiguous() else t.contiguous()


@torch.library.custom_op("spelltransfer::lora_grouped", mutates_args=())
def lora_grouped(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``(x_k @ A_k^T) @ B_k^T`` per trial k: x [N, in], a [K, r, in], b [K, out, r], offsets [K] int32 ends."""
    x, a, b = _c(x), _c(a), _c(b)
    if _grouped_ok(x):
        h = torch._grouped_mm(x, a.transpose(1, 2), offs=offsets)
        return torch._grouped_mm(h, b.transpose(1, 2), offs=offsets)
    out = x.new_zeros(x.shape[0], b.shape[1])
    for k, start, end in _groups(offsets):
        if end > start:
            out[start:end] = (x[start:end] @ a[k].T) @ b[k].T
    return out


@lora_grouped.register_fake
def _(x, a, b, offsets):
    return x.new_empty(x.shape[0], b.shape[1])


@torch.library.custom_op("spelltransfer::lora_grouped_backward", mutates_args=())
def lora_grouped_backward(grad: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                          offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x [N, in], grad_a [K, r, in], grad_b [K, out, r]) of ``lora_grouped`` given grad [N, out].

    Per trial k, with h_k = x_k A_k^T and g_k its tokens' rows of ``grad``:
    grad_h_k = g_k B_k, grad_x_k = grad_h_k A_k, grad_B_k = g_k^T h_k, grad_A_k = grad_h_k^T x_k;
    a trial without tokens gets zero gradients.
    """
    grad, x, a, b = _c(grad), _c(x), _c(a), _c(b)
    if _grouped_ok(x):
        h = torch._grouped_mm(x, a.transpose(1, 2), offs=offsets)                 # [N, r]
        grad_h = torch._grouped_mm(grad, b, offs=offsets)                         # [N, r]
        grad_x = torch._grouped_mm(grad_h, a, offs=offsets)                       # [N, in]
        grad_b = torch._grouped_mm(grad.t(), h, offs=offsets)                     # [K, out, r]
        grad_a = torch._grouped_mm(grad_h.t(), x, offs=offsets)                   # [K, r, in]
        return grad_x, grad_a, grad_b
    grad_x, grad_a, grad_b = torch.zeros_like(x), torch.zeros_like(a), torch.zeros_like(b)
    for k, start, end in _groups(offsets):
        if end > start:
            xs, gs = x[start:end], grad[start:end]
            h, grad_h = xs @ a[k].T, gs @ b[k]
            grad_x[start:end] = grad_h @ a[k]
            grad_b[k] = gs.T @ h
            grad_a[k] = grad_h.T @ xs
    return grad_x, grad_a, grad_b


@lora_grouped_backward.register_fake
def _(grad, x, a, b, offsets):
    return x.new_empty(x.shape), a.new_empty(a.shape), b.new_empty(b.shape)


def _lora_grouped_setup(ctx, inputs, output):
    x, a, b, offsets = inputs
    ctx.save_for_backward(x, a, b, offsets)


def _lora_grouped_grad(ctx, grad):
    x, a, b, offsets = ctx.saved_tensors
    grad_x, grad_a, grad_b = lora_grouped_backward(grad, x, a, b, offsets)
    need = ctx.needs_input_grad
    return (grad_x if need[0] else None), (grad_a if need[1] else None), (grad_b if need[2] else None), None


lora_grouped.register_autograd(_lora_grouped_grad, setup_context=_lora_grouped_setup)


def find_target_linears(model: nn.Module, target_modules: list[str]) -> list[tuple[str, nn.Linear]]:
    """(module path, layer) of every ``nn.Linear`` whose last name is a target, in model order (PEFT's order)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.split(".")[-1] in target_modules:
            found.append((name, module))
    return found


def inject_multi_lora(model: nn.Module, target_modules: list[str], ranks: list[int], alphas: list[float],
                      kernel: str = "auto") -> tuple[MultiLoRAWeights, Routing]:
    """Freeze ``model`` and replace each target linear with a ``MultiLoRALinear`` (in place)."""
    for p in model.parameters():
        p.requires_grad_(False)
    targets = find_target_linears(model, target_modules)
    if not targets:
        raise ConfigError(f"lora.target_modules: none of {target_modules} is a linear layer of the model")
    device = targets[0][1].weight.device
    dtype = targets[0][1].weight.dtype
    if kernel == "auto":
        kernel = "grouped" if grouped_mm_available(device, dtype) else "loop"
    slots = [AdapterSlot(name, layer.in_features, layer.out_features) for name, layer in targets]
    weights = MultiLoRAWeights(slots, ranks, alphas, device)
    routing = Routing(len(ranks))
    for index, (name, layer) in enumerate(targets):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, MultiLoRALinear(layer, weights, index, routing, kernel))
    model.multi_lora = weights  # registered once, so .to()/state_dict see the adapters
    return weights, routing


def export_adapter(weights: MultiLoRAWeights, k: int, out_dir: str | Path, target_modules: list[str],
                   base_model_path: str, extra_files: dict[str, str] | None = None) -> Path:
    """Write trial k as a standard PEFT adapter folder (``PeftModel.from_pretrained`` loads it).

    Written into a staging folder beside ``out_dir`` and moved in with ``os.replace``.
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    from spelltransfer.atomic import staged_dir

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    config = LoraConfig(r=weights.ranks[k], lora_alpha=weights.alphas[k], lora_dropout=0.0, bias="none",
                        target_modules=list(target_modules), task_type="CAUSAL_LM",
                        base_model_name_or_path=str(base_model_path))
    tensors = {}
    for key, value in weights.trial_state(k).items():
        module, _, which = key.rpartition(".")
        tensors[f"base_model.model.{module}.{which}.weight"] = value.float().contiguous().cpu()
    with staged_dir(out_dir) as staging:
        config.save_pretrained(str(staging))
        save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
    return out_dir


def adapter_summary(weights: MultiLoRAWeights) -> str:
    return json.dumps({"trials": weights.n_trials, "r_max": weights.r_max, "modules": len(weights.slots),
                       "params_per_trial_padded": weights.flat.shape[1]})
