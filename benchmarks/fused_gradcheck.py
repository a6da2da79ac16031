"""Adapter gradients of the fused decoder, eager and compiled, against an fp32 reference (GPU).

    PYTHONPATH=$PWD/shared python3 benchmarks/fused_gradcheck.py [--tokens 8192] [--layers 4] [--device cuda]

Why: a loss-only check can miss a wrong backward (at step 1 every B is zero, so the LoRA forward
is exactly zero whatever the kernel does). Here the adapters are random (B != 0), one packed chunk
goes forward and backward with the answer loss, and every variant's flat adapter gradient is
compared with an fp32 slice-loop reference: bf16 variants should sit at bf16 noise, all alike.

Issue 14 (compiled ``post_attention`` trains wrong on CUDA) -- one run answers, per variant:
``grad_rel`` (and per module / layer / trial), ``same_as`` (earlier variants with bit-identical
gradients: did a switch change anything at all?) and Inductor's counters (``grouped_mm_lowered``:
how many ``_grouped_mm`` it lowered itself; an FX-graph cache hit lowers nothing). In run order
(``variants_table``; no variant starts past ``--budget-s``):

    unit *                 the LoRA pair alone (x, A, B random; offsets not multiples of 16, one empty
                           trial): eager aten, the opaque op (+ compiled aten/opaque: --unit-compiled)
    bf16 eager [loop]      the noise floor (grouped / slice-loop LoRA kernel)
    bf16 compiled          as the trainer compiled before: Inductor lowers ``_grouped_mm``
    bf16 compiled opaque   grouped GEMMs as the opaque ``lora_grouped`` op (multi_lora.py)
    ... post only (aten, opaque), pre only, each of post_attention's four parts compiled alone,
    AOTAutograd without donated buffers, the slice loop compiled (no grouped GEMM at all: the CPU
    configuration), Inductor without mix-order reductions, fp32 compiled (loop), Inductor without
    its Triton GEMM templates (``max_autotune_gemm_backends=ATEN``), pre only opaque.

Imports only spelltransfer's packed modules (``spelltransfer.train``'s package init needs pydantic,
which the GPU machine lacks: the two package inits are skipped). Rows go to stdout as JSON lines and,
when ``$OUT`` is set, to ``$OUT/gradcheck.json`` (rewritten after every row).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gpu_check import Rows, environment, has_config, import_packed, patched, rel as _rel, unsupported, sig as _sig  # noqa: E402

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def variants_table(dev: str, cpu_compile: bool):
    """name -> spec, in the order they run: what each row tells (docs/performance.md section 7),
    cheap rows (cache hits of an earlier compile) early; ``--budget-s`` cuts the tail."""
    import torch

    bf16, fp32 = torch.bfloat16, torch.float32
    fresh = {"fx_graph_cache": False}  # config toggles: recompile, never a cached graph of another variant

    def v(dtype=bf16, kernel="grouped", compile=None, opaque=False, inductor=None, functorch=None, part=None):
        return {"dtype": dtype, "kernel": kernel, "compile": compile, "opaque": opaque,
                "inductor": inductor or {}, "functorch": functorch or {}, "part": part}

    table = {
        "bf16 eager": v(),
        "bf16 eager loop": v(kernel="loop"),
        "bf16 compiled": v(compile="both"),                      # as the trainer compiled before
        "bf16 compiled opaque": v(compile="both", opaque=True),  # the new default under compile
        "bf16 compiled post only": v(compile="post"),            # these three: FX-cache hits, cheap
        "bf16 compiled post only opaque": v(compile="post", opaque=True),
        "bf16 compiled pre only": v(compile="pre"),
        "bf16 compiled post part 1 (o LoRA + residual)": v(compile="part", part=1),
        "bf16 compiled post part 2 (RMSNorm)": v(compile="part", part=2),
        "bf16 compiled post part 3 (gate/up LoRA + SiLU*up)": v(compile="part", part=3),
        "bf16 compiled post part 4 (down LoRA + residual)": v(compile="part", part=4),
        "bf16 compiled donated_buffer off": v(compile="both", functorch={"donated_buffer": False}, inductor=fresh),
        "bf16 compiled loop": v(kernel="loop", compile="both"),
        "bf16 compiled mix_order_reduction off": v(compile="both", inductor={"triton.mix_order_reduction": False, **fresh}),
        "fp32 compiled loop": v(dtype=fp32, kernel="loop", compile="both"),
        "bf16 compiled ATEN gemms only": v(compile="both", inductor={"max_autotune_gemm_backends": "ATEN", **fresh}),
        "bf16 compiled pre only opaque": v(compile="pre", opaque=True),
    }
    if dev == "cpu":
        table["fp32 eager grouped opaque"] = v(dtype=fp32, opaque=True)
        if not cpu_compile:
            table = {k: x for k, x in table.items() if x["compile"] is None}
    return table


def split_post(fused, part: int):
    """``post_attention`` as its four parts, part ``part`` compiled alone (the rest eager)."""
    import torch
    import torch.nn.functional as F

    lora_delta = fused.lora_delta

    def p1(x, attn, w_o, a_o, b_o, offsets, *, kernel, ends):
        attn = attn.reshape(attn.shape[0], -1)
        return x + attn @ w_o.T + lora_delta(attn, a_o, b_o, offsets, ends, kernel)

    def p2(x, ln_w, *, eps):
        return fused._rms_norm(x, ln_w, eps)

    def p3(h, w_gu, a_gu, b_gu, offsets, *, intermediate, kernel, ends):
        gu = h @ w_gu.T + lora_delta(h, a_gu, b_gu, offsets, ends, kernel)
        return F.silu(gu[:, :intermediate]) * gu[:, intermediate:]

    def p4(x, m, w_down, a_d, b_d, offsets, *, kernel, ends):
        return x + m @ w_down.T + lora_delta(m, a_d, b_d, offsets, ends, kernel)

    parts = [p1, p2, p3, p4]
    parts[part - 1] = torch.compile(parts[part - 1], dynamic=False, fullgraph=True)
    c1, c2, c3, c4 = parts

    def post(x, attn, w_o, a_o, b_o, ln_w, w_gu, a_gu, b_gu, w_down, a_d, b_d, offsets, *,
             eps, intermediate, kernel, ends=None):
        x = c1(x, attn, w_o, a_o, b_o, offsets, kernel=kernel, ends=ends)
        h = c2(x, ln_w, eps=eps)
        m = c3(h, w_gu, a_gu, b_gu, offsets, intermediate=intermediate, kernel=kernel, ends=ends)
        return c4(x, m, w_down, a_d, b_d, offsets, kernel=kernel, ends=ends)

    return post


def _compile_counters(counters) -> dict:
    """How many ``_grouped_mm`` Inductor lowered, and its FX-graph cache hits/misses (a hit lowers nothing)."""
    return {"grouped_mm_lowered": sum(v for k, v in counters["aten_mm_info"].items() if "grouped_mm" in k),
            "mm_lowered": sum(counters["aten_mm_info"].values()),
            "fx_cache_hit": counters["inductor"].get("fxgraph_cache_hit", 0),
            "fx_cache_miss": counters["inductor"].get("fxgraph_cache_miss", 0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--cpu-compile", action="store_true", help="on CPU, also the compiled variants (slow)")
    parser.add_argument("--variants", default=None, help="comma-separated substrings: run only the variants matching one")
    parser.add_argument("--no-unit", action="store_true", help="skip the LoRA-pair unit rows")
    parser.add_argument("--unit-compiled", action="store_true",
                        help="also the compiled unit rows (~10 s of compiling; 'bf16 compiled opaque' asks the same)")
    parser.add_argument("--budget-s", type=float, default=85.0, help="start no variant after this many seconds")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    pk = import_packed()
    attention, fused, multi_lora = pk.attention, pk.fused, pk.multi_lora
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    dev = args.device
    rows = Rows("gradcheck.json")
    emit = rows.emit
    header = environment(torch, dev)
    header["configs"] = {k: has_config(inductor_config, k) for k in ("max_autotune_gemm_backends", "triton.mix_order_reduction")}
    header["configs"]["functorch.donated_buffer"] = has_config(functorch_config, "donated_buffer")
    emit(header)

    def over_budget(name: str) -> bool:
        if time.perf_counter() - started > args.budget_s:
            emit({"variant": name, "skipped": f"past --budget-s {args.budget_s}"})
            return True
        return False

    def wanted(name: str) -> bool:
        return args.variants is None or any(s.strip() and s.strip() in name for s in args.variants.split(","))

    # ---- unit rows: the LoRA pair alone ---------------------------------------------------------
    if not args.no_unit:
        g = torch.Generator().manual_seed(2)
        n, d_in, r, d_out = 1000, args.hidden, 96, 2 * args.hidden
        ends = [100, 333, 333, 1000]  # not multiples of 16; trial 2 has no tokens
        x0 = torch.randn(n, d_in, generator=g)
        a0 = torch.randn(len(ends), r, d_in, generator=g) / d_in ** 0.5
        b0 = torch.randn(len(ends), d_out, r, generator=g) / r ** 0.5
        gy0 = torch.randn(n, d_out, generator=g)
        offs = torch.tensor(ends, dtype=torch.int32, device=dev)

        def pair(kernel):
            return lambda x, a, b: multi_lora.lora_delta(x, a, b, offs, ends, kernel)

        def unit(fn, dtype):
            x, a, b = (t.to(dev, dtype, copy=True).requires_grad_() for t in (x0, a0, b0))
            y = fn(x, a, b)
            y.backward(gy0.to(dev, dtype))
            return [t.detach().float().cpu() for t in (y, x.grad, a.grad, b.grad)]

        ref = unit(pair("loop"), torch.float32)
        units = {"unit eager aten": (pair("grouped"), False), "unit eager opaque": (pair("grouped_op"), False),
                 "unit compiled aten": (pair("grouped"), True), "unit compiled opaque": (pair("grouped_op"), True)}
        for name, (fn, compile_) in units.items():
            if (compile_ and (not args.unit_compiled or (dev == "cpu" and not args.cpu_compile))
                    or not wanted(name) or over_budget(name)):
                continue
            t0 = time.perf_counter()
            try:
                torch._dynamo.reset()
                counters.clear()
                if compile_:
                    fn = torch.compile(fn, dynamic=False, fullgraph=True)
                got = unit(fn, torch.bfloat16)
                row = {"variant": name, **{f"{k}_rel": _sig(_rel(o, e)) for k, o, e in zip(("y", "gx", "ga", "gb"), got, ref)},
                       "empty_trial_grad": float(got[2][2].abs().sum() + got[3][2].abs().sum()),
                       "inductor": _compile_counters(counters), "s": round(time.perf_counter() - t0, 1)}
            except Exception as error:  # noqa: BLE001 - report every variant
                import traceback

                traceback.print_exc(limit=4)
                row = {"variant": name, "error": f"{type(error).__name__}: {str(error)[:300]}"}
            emit(row)

    # ---- the fused decoder ---------------------------------------------------------------------
    heads = max(1, args.hidden // 64)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                         intermediate_size=max(64, int(args.hidden * 8 / 3) // 64 * 64),
                         num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 3),
                         head_dim=64, rope_theta=100000.0, tie_word_embeddings=True)
    ranks, alphas = [4, 8, 16, 32, 8, 16, 4, 32], [8, 16, 32, 64, 32, 8, 16, 16]
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 80, (max(1, args.tokens // 50),), generator=g)
    lengths = lengths[torch.cumsum(lengths, 0) <= args.tokens]
    n = int(lengths.sum())
    ids = torch.randint(3, args.vocab, (n,), generator=g)
    pos = torch.cat([torch.arange(int(k)) for k in lengths])
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)]).to(torch.int32)
    ends = torch.linspace(0, n, len(ranks) + 1)[1:].long().tolist()
    ends[-1] = n
    scored = torch.randperm(n, generator=g)[: n // 5].sort().values
    targets = torch.randint(3, args.vocab, (scored.numel(),), generator=g)

    def run(spec):
        dtype, kernel, compile_ = spec["dtype"], spec["kernel"], spec["compile"]
        attention._state["backend"] = "loop" if dtype == torch.float32 else None  # FlashAttention has no fp32
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dev, dtype)
        weights, routing = multi_lora.inject_multi_lora(model, list(MODULES), ranks, alphas, kernel=kernel)
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
        decoder = fused.FusedDecoder(model, weights, routing, compile=False, opaque_grouped_mm=spec["opaque"])
        if compile_ == "both":
            decoder.enable_compile()
        elif compile_ == "pre":
            decoder._pre = torch.compile(fused.pre_attention, dynamic=False, fullgraph=True)
        elif compile_ == "post":
            decoder._post = torch.compile(fused.post_attention, dynamic=False, fullgraph=True)
        elif compile_ == "part":
            decoder._post = split_post(fused, spec["part"])
        routing.set_token_ends(ends, torch.tensor(ends, dtype=torch.int32, device=dev))
        hidden = decoder.hidden(ids.to(dev), pos.to(dev), cu.to(dev), int(lengths.max()))
        logits = model.get_output_embeddings()(hidden.index_select(0, scored.to(dev))).float()
        loss = F.cross_entropy(logits, targets.to(dev))
        loss.backward()
        return float(loss.detach()), weights, decoder.layer_kernel, hidden.detach().float().cpu()

    def layout(weights):
        """(module kind, layer, 'A'|'B', start, stop) of every block of the flat buffer."""
        blocks, offset = [], 0
        for slot in weights.slots:
            kind = slot.name.rsplit(".", 1)[-1].replace("_proj", "")
            layer = int(slot.name.split(".layers.")[1].split(".")[0])
            for part, size in (("A", weights.r_max * slot.in_features), ("B", slot.out_features * weights.r_max)):
                blocks.append((kind, layer, part, offset, offset + size))
                offset += size
        return blocks

    def breakdown(grad, ref, blocks):
        by_module, by_layer = {}, {}
        for key_fn, out in ((lambda kind, layer, part: f"{kind}.{part}", by_module), (lambda kind, layer, part: layer, by_layer)):
            groups: dict = {}
            for kind, layer, part, start, stop in blocks:
                groups.setdefault(key_fn(kind, layer, part), []).append((start, stop))
            for key, spans in groups.items():
                got = torch.cat([grad[:, s:e].reshape(-1) for s, e in spans])
                exp = torch.cat([ref[:, s:e].reshape(-1) for s, e in spans])
                out[key] = _sig(_rel(got, exp))
        by_trial = [_sig(_rel(grad[k], ref[k])) for k in range(grad.shape[0])]
        return by_module, [by_layer[i] for i in sorted(by_layer)], by_trial

    if over_budget("fp32 reference"):
        return 1
    t0 = time.perf_counter()
    ref_loss, ref_weights, _, ref_hidden = run({"dtype": torch.float32, "kernel": "loop", "compile": None, "opaque": False, "part": None})
    ref_grad = ref_weights.grad.detach().float().cpu()
    blocks = layout(ref_weights)
    del ref_weights
    emit({"variant": "fp32 reference (eager, slice loop, SDPA per sequence)", "loss": round(ref_loss, 6),
          "grad_norm": _sig(float(ref_grad.norm())), "tokens": n, "ends": ends, "s": round(time.perf_counter() - t0, 1)})

    grads: dict[str, torch.Tensor] = {}
    for name, spec in variants_table(dev, args.cpu_compile).items():
        if not wanted(name) or over_budget(name):
            continue
        skip = unsupported(spec)
        if skip:
            emit({"variant": name, "skipped": skip})
            continue
        t0 = time.perf_counter()
        try:
            with patched(torch, spec):
                loss, weights, layer_kernel, hidden = run(spec)
            grad = weights.grad.detach().float().cpu()
            del weights
            by_module, by_layer, by_trial = breakdown(grad, ref_grad, blocks)
            cos = float((grad * ref_grad).sum() / (grad.norm() * ref_grad.norm()))
            row = {"variant": name, "layer_kernel": layer_kernel, "loss": round(loss, 6), "ref_loss": round(ref_loss, 6),
                   "hidden_rel": _sig(_rel(hidden, ref_hidden)), "grad_rel": _sig(_rel(grad, ref_grad)),
                   "grad_norm_ratio": _sig(float(grad.norm() / ref_grad.norm())), "grad_cos": _sig(cos),
                   "same_as": [other for other, g_other in grads.items() if torch.equal(grad, g_other)],
                   "by_module": by_module, "by_layer": by_layer, "by_trial": by_trial,
                   "inductor": _compile_counters(counters), "s": round(time.perf_counter() - t0, 1)}
            grads[name] = grad
        except Exception as error:  # noqa: BLE001 - report every variant
            import traceback

            traceback.print_exc(limit=4)
            row = {"variant": name, "error": f"{type(error).__name__}: {str(error)[:300]}", "s": round(time.perf_counter() - t0, 1)}
        emit(row)
        if dev == "cuda":
            torch.cuda.empty_cache()
    emit({"done": True, "total_s": round(time.perf_counter() - started, 1)})
    print("\nsummary (grad_rel vs the fp32 reference; worst module; bit-identical to):")
    for row in rows:
        if "variant" not in row:
            continue
        if "grad_rel" in row:
            worst = max(row["by_module"].items(), key=lambda kv: kv[1])
            print(f"  {row['variant']:<52} grad {row['grad_rel']:<9.3g} hidden {row['hidden_rel']:<9.3g} "
                  f"worst {worst[0]} {worst[1]:.3g}  same as {row['same_as'] or '-'}  {row['s']} s")
        elif "y_rel" in row:
            print(f"  {row['variant']:<52} y {row['y_rel']:.3g} gx {row['gx_rel']:.3g} ga {row['ga_rel']:.3g} "
                  f"gb {row['gb_rel']:.3g} empty-trial grad {row['empty_trial_grad']:.3g}")
        else:
            print(f"  {row['variant']:<52} {row.get('error') or row.get('skipped') or row.get('loss')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
