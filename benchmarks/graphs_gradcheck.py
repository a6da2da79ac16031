"""Adapter gradients of the packed trainer's CUDA-graph replays, eager and compiled, against eager references (GPU).

    PYTHONPATH=$PWD/shared timeout 120 python3 benchmarks/graphs_gradcheck.py [--tokens 8192] [--layers 4]

Why (issue 14, docs/performance.md section 7): ``fused_gradcheck.py`` showed on the H200 that one
forward+backward of the compiled fused decoder, *without* CUDA graphs, has the right adapter
gradient (bf16 noise). The trainer's compiled path still trains wrong; the only mode that disagrees
is compile *inside* ``graphs.GraphedChunks``' manual capture. This check drives ``GraphedChunks``
itself (graphs.py, unchanged) the way ``PackedTrainer.step`` does -- static buffers loaded with
``load``, ``run`` (capture on the first chunk, replay after), several chunks per step accumulated
into the flat gradient buffer, then an in-place AdamW step (``MultiTrialAdamW``) -- and compares every
chunk's gradient contribution with eager (no graph, no compile) forward/backward passes on the same
data and the same adapter weights.

What it replicates rather than imports: ``PackedTrainer`` itself (trainer.py imports pydantic, which
the GPU machine lacks). ``Bench`` below is a stand-in with the attributes ``GraphedChunks`` reads
(``device``, ``trials``, ``pad_id``, ``weights``, ``routing``, ``loss_on_device``); its
``loss_on_device`` is the trainer's own ``train/packed/chunk_loss.chunk_loss`` (checked equal by
``tests/train/test_packed_graphs_bench.py``). Chunks come from ``batches.plan_step``/``cut_chunks``
with ``GraphedChunks.limits()``, as in ``PackedTrainer.step``.

The adapter trajectory is the same for every variant: after each step the flat gradient buffer is
overwritten with the *reference* (bf16 eager) step gradient before ``MultiTrialAdamW.step``, so every
variant sees bit-identical weights at every chunk and one reference pass serves all. (The optional
``--train-steps`` rows instead let each mode train on its own gradients, like ``fused_selfcheck.py``.)
``--init peft`` (default): B = 0 at step 0, as when the trainer captures its graph on its first chunk, then
B != 0 from step 1 on (``--lr`` 0.02 moves it well away from 0); ``--init random``: B != 0 from the start.
Per step, ``flat_rel_at_start``/``replay_wrote_flat``: whether anything but the optimizer changed the adapters
(a replay writing into the flat buffer).

Per variant and chunk: ``grad_rel`` vs the fp32 reference (eager, slice-loop LoRA, SDPA per
sequence) and ``vs_eager`` vs the bf16 eager reference, next to ``floor`` (bf16 eager vs fp32: the
noise), ``loss_rel`` (per-trial chunk loss vs eager), ``lora_loss_rel`` (that difference over the LoRA's
share of the eager loss, eager loss minus the loss with every B = 0: ~bf16 noise / effect when the LoRA part
of the replayed forward is right, ~1 or more when it is not), ``empty_grad`` (norm of the gradient given to
trials with no token in that chunk: must be 0), ``by_trial``; ``repeat_rel``: chunk 0 replayed again
at the end with step 0's weights vs its first replay (a graph that reads state left by earlier
replays differs here); ``vs_nograph_compiled``: compiled-in-graph vs the same compiled functions
called without a graph (same kernels: should be at the eager-in-graph ``repeat_rel`` level).
Variants, in run order (``--budget-s`` cuts the tail; rows are written as they come)::

    graph hf (default path)        the default: HF decoder + MultiLoRALinear under graphs
    graph fused eager (nocompile)  fused decoder under graphs, no compile
    nograph compiled               compiled fused decoder, GraphedChunks._forward_backward without capture
    graph compiled                 what PackedTrainer(fused=True, compile=True) runs
    train eager / train graph compiled
                                   --train-steps (default 3) steps at --train-lr on each mode's own gradients:
                                   per-trial losses, max relative difference vs eager (the trainer-level symptom)
    graph compiled prewarm         + forward/backward on the exact capture buffers on the default stream first
    graph compiled post only / pre only
    graph compiled mix_order off   torch._inductor.config.triton.mix_order_reduction = False (pytorch#193061:
                                   reduction outputs left unwritten -> stale memory; under graphs "stale" is
                                   the previous replay's value)
    graph compiled N-76            N = tokens - 76 (not a multiple of 16, like fused_gradcheck's 8116)
    graph compiled aten grouped    opaque_grouped_mm=False (session 3's configuration)
    graph compiled donated off     torch._functorch.config.donated_buffer = False
    train graph fused eager (nocompile) / train nograph compiled

CPU (``--device cpu``): no graphs (the "graph" variants run ``_forward_backward`` without capture,
i.e. only the script logic and the static layout are tested); compiled variants only with
``--cpu-compile``. Rows to stdout as JSON lines and, when ``$OUT`` is set, ``$OUT/graphs_gradcheck.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gpu_check import Rows, environment, import_packed, patched, rel as _rel, unsupported, sig as _sig  # noqa: E402

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANKS = [4, 8, 16, 32, 8, 16, 4, 32]
ALPHAS = [8, 16, 32, 64, 32, 8, 16, 16]
BATCHES = [16, 32, 64, 32, 48, 96, 32, 64]   # examples per trial per step: ~2-3 chunks of 8k tokens per step
ACCUM = [1, 2, 1, 1, 2, 1, 4, 1]
KERNEL = ["auto"]   # the LoRA kernel of the bf16 rows (main sets it from --kernel)


class Bench:
    """What ``GraphedChunks`` reads of a ``PackedTrainer`` (which needs pydantic); its loss is the trainer's own."""

    def __init__(self, model, weights, routing, fused, n_trials: int, pad_id: int = 0):
        self.model, self.weights, self.routing, self.fused = model, weights, routing, fused
        self.trials = [None] * n_trials
        self.pad_id = pad_id
        self.device = next(model.parameters()).device

    def loss_on_device(self, input_ids, position_ids, attention_mask, cu, max_len, predict_at, targets, weights, trial_of):
        """The trainer's own chunk loss (train/packed/chunk_loss.py), compiled layers wherever the decoder has them."""
        return import_packed().chunk_loss.chunk_loss(self.model, self.fused, len(self.trials), input_ids, position_ids,
                                                     attention_mask, cu, max_len, predict_at, targets, weights, trial_of)


def make_steps(pk, n_steps: int, vocab: int, seed: int = 0):
    """Per step: the ``plan_step`` sequences of every trial's batch (synthetic examples, 10-token answers)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(n_steps):
        batches = {}
        for k, (size, accum) in enumerate(zip(BATCHES, ACCUM)):
            examples = []
            for _ in range(size):
                n = int(rng.integers(30, 70))
                ids = rng.integers(3, vocab, size=n)
                answer = np.arange(n - 11, n - 1)
                examples.append(pk.batches.PreparedExample(ids, answer, ids[answer + 1]))
            micro = -(-size // accum)
            batches[k] = [examples[j:j + micro] for j in range(0, size, micro)]
        steps.append(pk.batches.plan_step(batches))
    return steps


def scale_batches(factor: float) -> None:
    """Smaller per-trial batches (the CPU smoke test)."""
    global BATCHES
    BATCHES = [max(2, int(b * factor)) for b in BATCHES]


def build(pk, config, dev: str, dtype, *, fused: bool, compile_: str | None, opaque, seed_state, kernel: str | None = None):
    """A random Llama of ``config`` with the packed adapters; ``seed_state``: the flat buffer to start from."""
    import torch
    from transformers import LlamaForCausalLM

    pk.attention._state["backend"] = "loop" if dtype == torch.float32 else None  # FlashAttention has no fp32
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(dev, dtype)
    weights, routing = pk.multi_lora.inject_multi_lora(model, list(MODULES), RANKS, ALPHAS, kernel=kernel or KERNEL[0])
    if dev == "cuda" and dtype == torch.bfloat16:
        pk.attention.register()
        pk.attention.set_attention(model, pk.attention.ATTENTION_NAME)
    else:
        pk.attention.register("loop")
        pk.attention.set_attention(model, pk.attention.ATTENTION_NAME)
    decoder = None
    if fused:
        decoder = pk.fused.FusedDecoder(model, weights, routing, compile=False, opaque_grouped_mm=opaque)
        if compile_ == "both":
            decoder.enable_compile()
        elif compile_ == "pre":
            decoder._pre = torch.compile(pk.fused.pre_attention, dynamic=False, fullgraph=True)
            decoder.compiled = True
        elif compile_ == "post":
            decoder._post = torch.compile(pk.fused.post_attention, dynamic=False, fullgraph=True)
            decoder.compiled = True
    with torch.no_grad():
        weights.flat.copy_(seed_state)
    weights.zero_grad()
    return model, weights, routing, decoder


def initial_state(pk, config, dev: str, init: str = "peft"):
    """Step 0's adapters: PEFT-style A per trial, zero beyond each trial's rank; B = 0 (``peft``: what the
    trainer captures its graph with) or random (``random``: B != 0 from the first replay)."""
    import torch

    weights = pk.multi_lora.MultiLoRAWeights(
        [pk.multi_lora.AdapterSlot(f"model.layers.{i}.{'self_attn' if m in MODULES[:4] else 'mlp'}.{m}", *shape)
         for i in range(config.num_hidden_layers) for m, shape in _shapes(config).items()], RANKS, ALPHAS, "cpu")
    for k in range(len(RANKS)):
        weights.init_trial(k, k + 1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b in weights.lora_B:
            b.copy_(torch.randn(b.shape, generator=g) * 0.02 if init == "random" else torch.zeros(b.shape))
        for k, rank in enumerate(RANKS):
            for a, b in zip(weights.lora_A, weights.lora_B):
                a[k, rank:] = 0
                b[k, :, rank:] = 0
    return weights.flat.detach().clone().to(dev)


def _shapes(config) -> dict:
    d, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (getattr(config, "head_dim", None) or d // config.num_attention_heads)
    q = config.num_attention_heads * (getattr(config, "head_dim", None) or d // config.num_attention_heads)
    return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
            "gate_proj": (d, i), "up_proj": (d, i), "down_proj": (i, d)}


def chunk_trials(part) -> list[int]:
    return sorted({s.trial for s in part})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=8192, help="the graph's static chunk size N (the trainer's max_chunk_tokens)")
    parser.add_argument("--max-len", type=int, default=128, help="the trainer's max_seq_length (dummy padding sequences)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per variant (each 2-3 chunks)")
    parser.add_argument("--init", choices=("peft", "random"), default="peft",
                        help="B at step 0: peft = 0, as when the trainer captures its graph (B != 0 from step 1 on); random")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--lr", type=float, default=2e-2,
                        help="AdamW lr of the shared (reference-gradient) trajectory: large, so B moves well away from 0")
    parser.add_argument("--train-steps", type=int, default=3, help="steps of the own-gradient training rows (0: none)")
    parser.add_argument("--train-lr", type=float, default=2e-2)
    parser.add_argument("--batch-scale", type=float, default=1.0, help="scale the per-trial batch sizes (CPU: small)")
    parser.add_argument("--cpu-compile", action="store_true", help="on CPU, also the compiled variants (slow)")
    parser.add_argument("--kernel", default="auto", help="LoRA kernel of the bf16 rows: auto = the trainer's choice on CUDA "
                        "(grouped); on CPU grouped where torch has a CPU _grouped_mm (the loop kernel's python ends would "
                        "make every chunk a recompile), else loop")
    parser.add_argument("--variants", default=None, help="comma-separated substrings: run only the variants matching one")
    parser.add_argument("--budget-s", type=float, default=75.0, help="start no variant after this many seconds")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.batch_scale != 1.0:
        scale_batches(args.batch_scale)

    import torch
    from transformers import LlamaConfig

    pk = import_packed()
    KERNEL[0] = args.kernel
    if args.kernel == "auto" and args.device != "cuda":
        KERNEL[0] = "grouped" if pk.multi_lora._probe_cpu_grouped_mm() else "loop"
    from torch._dynamo.utils import counters

    dev = args.device
    cuda = dev == "cuda"
    bf16 = torch.bfloat16 if cuda else torch.float32   # CPU: "bf16" rows run fp32 (no bf16 FlashAttention there)
    rows = Rows("graphs_gradcheck.json")
    emit = rows.emit
    emit(environment(torch, dev, args=vars(args)))

    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                         head_dim=args.hidden // args.heads, max_position_embeddings=2048, rope_theta=100000.0,
                         tie_word_embeddings=True, rms_norm_eps=1e-5)
    n_trials = len(RANKS)
    state0 = initial_state(pk, config, dev, args.init)
    steps = make_steps(pk, args.steps, args.vocab)
    max_scored = int(args.tokens * 0.3)

    def runner_for(bench, n_tokens=None):
        return pk.graphs.GraphedChunks(bench, n_tokens or args.tokens, max_scored, args.max_len)

    def plan(runner):
        """Chunks per step, cut as PackedTrainer.step cuts them for this runner's limits."""
        return [pk.batches.cut_chunks(seqs, runner.n_tokens, **runner.limits()) for seqs in steps]

    def make_optimizer(weights):
        return pk.optimizer.MultiTrialAdamW(weights, [0.0] * n_trials, [1.0] * n_trials, (0.9, 0.999), 1e-8)

    # ---- references: bf16 eager (no graph, no compile) drives the trajectory; fp32 for the noise floor ----
    t0 = time.perf_counter()
    model, weights, routing, decoder = build(pk, config, dev, bf16, fused=True, compile_=None, opaque=None, seed_state=state0)
    bench = Bench(model, weights, routing, decoder, n_trials)
    ref_runner = runner_for(bench)
    chunks = plan(ref_runner)
    optim = make_optimizer(weights)
    states, ref_grads, ref_losses, step_grads, chunk_meta, base_losses = [], [], [], [], [], []
    lrs, active = [args.lr] * n_trials, [True] * n_trials
    for s, parts in enumerate(chunks):
        states.append(weights.flat.detach().clone())
        weights.zero_grad()
        for c, part in enumerate(parts):
            before = weights.grad.clone()
            n_real, n_scored = ref_runner.load(part)
            per_trial = ref_runner._forward_backward()
            ref_grads.append(weights.grad - before)
            ref_losses.append(per_trial.detach().clone())
            base_losses.append(loss_without_lora(torch, bench, ref_runner))
            chunk_meta.append({"step": s, "chunk": c, "real_tokens": n_real, "scored": n_scored,
                               "trials": chunk_trials(part)})
        step_grads.append(weights.grad.detach().clone())
        optim.step(lrs, active)
    states.append(weights.flat.detach().clone())
    del model, weights, routing, decoder, bench, ref_runner, optim
    emit({"variant": "bf16 eager reference (fused decoder, no graph, no compile)", "chunks": chunk_meta,
          "grad_norms": [_sig(float(g.norm())) for g in ref_grads], "s": round(time.perf_counter() - t0, 1)})

    t0 = time.perf_counter()
    model, weights, routing, decoder = build(pk, config, dev, torch.float32, fused=True, compile_=None, opaque=None,
                                             seed_state=state0, kernel="loop")
    bench32 = Bench(model, weights, routing, decoder, n_trials)
    runner32 = runner_for(bench32)
    fp32_grads, i = [], 0
    for s, parts in enumerate(chunks):
        with torch.no_grad():
            weights.flat.copy_(states[s])
        for part in parts:
            weights.zero_grad()
            runner32.load(part)
            runner32._forward_backward()
            fp32_grads.append(weights.grad.detach().clone())
            i += 1
    del model, weights, routing, decoder, bench32, runner32
    floors = [_rel(g, r) for g, r in zip(ref_grads, fp32_grads)]
    emit({"variant": "fp32 reference (eager, slice loop, SDPA per sequence)", "floor_grad_rel": [_sig(f) for f in floors],
          "s": round(time.perf_counter() - t0, 1)})
    if cuda:
        torch.cuda.empty_cache()

    # ---- the variants (and the own-gradient training rows), in priority order: --budget-s cuts the tail ----
    fresh = {"fx_graph_cache": False}

    def v(graph=True, fused=True, compile_=None, opaque=None, prewarm=False, inductor=None, functorch=None, tokens_delta=0,
          train=False):
        return {"graph": graph, "fused": fused, "compile": compile_, "opaque": opaque, "prewarm": prewarm,
                "inductor": inductor or {}, "functorch": functorch or {}, "tokens_delta": tokens_delta, "train": train}

    table = {
        "graph hf (default path)": v(fused=False),
        "graph fused eager (nocompile)": v(),
        "nograph compiled": v(graph=False, compile_="both"),
        "graph compiled": v(compile_="both"),
        "train eager (fused, no graph)": v(graph=False, train=True),     # the training rows' reference
        "train graph compiled": v(compile_="both", train=True),
        "graph compiled prewarm": v(compile_="both", prewarm=True),
        "graph compiled post only": v(compile_="post"),
        "graph compiled pre only": v(compile_="pre"),
        "graph compiled mix_order off": v(compile_="both", inductor={"triton.mix_order_reduction": False, **fresh}),
        "graph compiled N-76": v(compile_="both", tokens_delta=-76),
        "graph compiled aten grouped": v(compile_="both", opaque=False),
        "graph compiled donated off": v(compile_="both", functorch={"donated_buffer": False}, inductor=fresh),
        "train graph fused eager (nocompile)": v(train=True),
        "train nograph compiled": v(graph=False, compile_="both", train=True),
    }
    if not cuda and not args.cpu_compile:
        table = {k: x for k, x in table.items() if x["compile"] is None}
    if args.train_steps <= 0:
        table = {k: x for k, x in table.items() if not x["train"]}
    train_steps = make_steps(pk, max(args.train_steps, 0), args.vocab, seed=7)

    def wanted(name: str) -> bool:
        if name == "train eager (fused, no graph)":   # the reference of any training row
            return any(table[k]["train"] and (args.variants is None or any(s.strip() and s.strip() in k
                       for s in args.variants.split(","))) for k in table)
        return args.variants is None or any(s.strip() and s.strip() in name for s in args.variants.split(","))

    def over_budget(name: str) -> bool:
        if time.perf_counter() - started > args.budget_s:
            emit({"variant": name, "skipped": f"past --budget-s {args.budget_s}"})
            return True
        return False

    nograph_compiled: list | None = None
    ref_train = None
    verdicts: dict[str, str] = {}
    for name, spec in table.items():
        if not wanted(name) or over_budget(name):
            continue
        skip = unsupported(spec)
        if skip:
            emit({"variant": name, "skipped": skip})
            continue
        t0 = time.perf_counter()
        try:
            with patched(torch, spec):
                if spec["train"]:
                    losses = train_own(pk, torch, spec, config, dev, bf16, state0, train_steps, runner_for, make_optimizer, args)
                    row = {"variant": name, "losses": [[_sig(x) for x in step] for step in losses]}
                    if ref_train is None:
                        ref_train = losses
                        row["verdict"] = "ref"
                    else:
                        diff = max(abs(a - b) / max(abs(b), 1e-6) for la, lb in zip(losses, ref_train) for a, b in zip(la, lb))
                        row["max_rel_loss_diff"] = _sig(diff)
                        row["verdict"] = "BAD" if diff > 1e-2 else "ok"
                else:
                    row = run_variant(pk, torch, name, spec, config, dev, bf16, state0, states, steps, step_grads, ref_grads,
                                      (ref_losses, base_losses), fp32_grads, floors, chunk_meta, runner_for, make_optimizer, args,
                                      nograph_compiled)
            if name == "nograph compiled":
                nograph_compiled = row.pop("_grads")
            row.pop("_grads", None)
            row["dynamo"] = {"unique_graphs": counters["stats"].get("unique_graphs", 0),
                             "calls_captured": counters["stats"].get("calls_captured", 0),
                             "fx_cache_hit": counters["inductor"].get("fxgraph_cache_hit", 0),
                             "fx_cache_miss": counters["inductor"].get("fxgraph_cache_miss", 0)}
            row["s"] = round(time.perf_counter() - t0, 1)
        except Exception as error:  # noqa: BLE001 - report every variant
            import traceback

            traceback.print_exc(limit=6)
            row = {"variant": name, "error": f"{type(error).__name__}: {str(error)[:400]}", "s": round(time.perf_counter() - t0, 1)}
        emit(row)
        verdicts[name] = row.get("verdict", row.get("error", "?"))
        if cuda:
            torch.cuda.empty_cache()

    emit({"done": True, "total_s": round(time.perf_counter() - started, 1), "verdicts": verdicts})
    print("\nsummary (worst chunk: grad_rel vs fp32 / floor, vs bf16 eager, loss_rel; repeat_rel; empty-trial grad):")
    for row in rows:
        if "variant" not in row:
            continue
        if "worst" in row:
            w = row["worst"]
            print(f"  {row['variant']:<34} {row['verdict']:<5} grad {w['grad_rel']:<9.3g} floor {w['floor']:<9.3g} "
                  f"vs_eager {w['vs_eager']:<9.3g} loss {w['loss_rel']:<9.3g} repeat {row.get('repeat_rel', float('nan')):<9.3g} "
                  f"empty {w['empty_grad']:<9.3g} lora_loss {row.get('worst_lora_loss_rel', '-')} "
                  f"nograph_c {row.get('worst_vs_nograph_compiled', '-')}  {row['s']} s")
        elif "losses" in row:
            print(f"  {row['variant']:<34} {row['verdict']:<5} max rel loss diff vs train eager "
                  f"{row.get('max_rel_loss_diff', '(reference)')}  {row.get('s')} s")
        else:
            print(f"  {row['variant']:<34} {row.get('error') or row.get('skipped') or ''}")
    return 0


def loss_without_lora(torch, bench, runner):
    """Per-trial loss of the loaded chunk with every B = 0 (eager, no grad): the base model's share of the loss."""
    weights = bench.weights
    saved = weights.flat.detach().clone()
    try:
        with torch.no_grad():
            for b in weights.lora_B:
                b.zero_()
            bench.routing.set_token_ends(runner._ends, runner.offsets)
            _, per_trial = bench.loss_on_device(runner.input_ids, runner.position_ids, None, runner.cu, runner.max_len,
                                                runner.predict_at, runner.targets, runner.weights, runner.trial_of)
            return per_trial.detach().clone()
    finally:
        with torch.no_grad():
            weights.flat.copy_(saved)


def _lora_loss_rel(got, ref, base):
    """|loss - eager loss| / |eager loss - loss without LoRA|: how wrong the LoRA part of the forward is (None at B = 0)."""
    effect = float((ref - base).norm())
    return _sig(float((got - ref).norm()) / effect) if effect > 0 else None


def _drive(runner, graph: bool):
    return runner.run() if graph else runner._forward_backward()


def run_variant(pk, torch, name, spec, config, dev, dtype, state0, states, steps, step_grads, ref_grads, losses,
                fp32_grads, floors, chunk_meta, runner_for, make_optimizer, args, nograph_compiled):
    ref_losses, base_losses = losses
    cuda = dev == "cuda"
    graph = spec["graph"] and cuda
    model, weights, routing, decoder = build(pk, config, dev, dtype, fused=spec["fused"], compile_=spec["compile"],
                                             opaque=spec["opaque"], seed_state=state0)
    bench = Bench(model, weights, routing, decoder, len(RANKS))
    runner = runner_for(bench, args.tokens + spec["tokens_delta"])
    chunks = [pk.batches.cut_chunks(seqs, runner.n_tokens, **runner.limits()) for seqs in steps]
    same_plan = [[chunk_trials(p) for p in parts] for parts in chunks] == \
        [[m["trials"] for m in chunk_meta if m["step"] == s] for s in range(len(steps))] and \
        [len(parts) for parts in chunks] == [sum(1 for m in chunk_meta if m["step"] == s) for s in range(len(steps))]
    # with another N the chunks differ: compare whole-step gradients only
    optim = make_optimizer(weights)
    lrs, active = [args.lr] * len(RANKS), [True] * len(RANKS)
    if spec["prewarm"]:
        saved = weights.grad.clone()
        runner.load(chunks[0][0])
        for _ in range(2):
            runner._forward_backward()
        if cuda:
            torch.cuda.synchronize()
        weights.grad.copy_(saved)
    per_chunk, grads, first_grad, i = [], [], None, 0
    step_rows = []
    for s, parts in enumerate(chunks):
        # the adapters must be the reference's here: a replay that writes into the flat buffer shows as flat_rel > 0
        flat_rel = _rel(weights.flat, states[s])
        with torch.no_grad():
            weights.flat.copy_(states[s])
        weights.zero_grad()
        replay_wrote_flat = False
        for c, part in enumerate(parts):
            before = weights.grad.clone()
            runner.load(part)
            per_trial = _drive(runner, graph).detach().clone()
            contribution = weights.grad - before
            replay_wrote_flat |= not torch.equal(weights.flat, states[s])
            if first_grad is None:
                first_grad = contribution.clone()
            if same_plan:
                ref, f32, floor = ref_grads[i], fp32_grads[i], floors[i]
                empty = [k for k in range(len(RANKS)) if k not in chunk_meta[i]["trials"]]
                entry = {"step": s, "chunk": c, "grad_rel": _sig(_rel(contribution, f32)), "floor": _sig(floor),
                         "vs_eager": _sig(_rel(contribution, ref)), "loss_rel": _sig(_rel(per_trial, ref_losses[i])),
                         "lora_loss_rel": _lora_loss_rel(per_trial, ref_losses[i], base_losses[i]),
                         "empty_trials": empty,
                         "empty_grad": _sig(float(contribution[empty].norm())) if empty else 0.0,
                         "by_trial": [_sig(_rel(contribution[k], f32[k])) if k not in empty else None for k in range(len(RANKS))]}
                if nograph_compiled is not None and spec["compile"] is not None:
                    entry["vs_nograph_compiled"] = _sig(_rel(contribution, nograph_compiled[i]))
                per_chunk.append(entry)
                if name == "nograph compiled":
                    grads.append(contribution.clone())
            i += 1
        step_rows.append({"step": s, "step_vs_eager": _sig(_rel(weights.grad, step_grads[s])), "flat_rel_at_start": _sig(flat_rel),
                          "replay_wrote_flat": replay_wrote_flat})
        weights.grad.copy_(step_grads[s])   # the shared trajectory: the reference's step gradient
        optim.step(lrs, active)
    # replay chunk 0 at step 0's weights again: a graph reading state left by earlier replays differs here
    with torch.no_grad():
        weights.flat.copy_(states[0])
    weights.zero_grad()
    runner.load(chunks[0][0])
    _drive(runner, graph)
    repeat_rel = _rel(weights.grad, first_grad)
    row = {"variant": name, "graph": graph, "captured": runner.graph is not None,
           "layer_kernel": decoder.layer_kernel if decoder is not None else "hf", "n_tokens": runner.n_tokens,
           "compiled": bool(decoder and decoder.compiled), "repeat_rel": _sig(repeat_rel), "steps": step_rows,
           "chunks": per_chunk, "_grads": grads}
    if per_chunk:
        worst = max(per_chunk, key=lambda e: e["grad_rel"] / max(e["floor"], 1e-12))
        row["worst"] = {k: worst[k] for k in ("step", "chunk", "grad_rel", "floor", "vs_eager", "loss_rel", "empty_grad")}
        lora = [e["lora_loss_rel"] for e in per_chunk if e["lora_loss_rel"] is not None]
        row["worst_lora_loss_rel"] = max(lora) if lora else None
        if any("vs_nograph_compiled" in e for e in per_chunk):
            row["worst_vs_nograph_compiled"] = max(e.get("vs_nograph_compiled", 0.0) for e in per_chunk)
        bad = any(e["grad_rel"] > max(3 * e["floor"], 0.05) or e["empty_grad"] > 0 or e["loss_rel"] > 1e-2 for e in per_chunk)
        bad |= any(r["replay_wrote_flat"] or r["flat_rel_at_start"] > 0 for r in step_rows)
        row["verdict"] = "BAD" if bad else "ok"
    else:
        worst_step = max(r["step_vs_eager"] for r in step_rows)
        row["worst"] = {"step": None, "chunk": None, "grad_rel": worst_step, "floor": float("nan"), "vs_eager": worst_step,
                        "loss_rel": float("nan"), "empty_grad": float("nan")}
        bad = worst_step > 0.05 or any(r["replay_wrote_flat"] or r["flat_rel_at_start"] > 0 for r in step_rows)
        row["verdict"] = "BAD" if bad else "ok"
    return row


def train_own(pk, torch, spec, config, dev, dtype, state0, train_steps, runner_for, make_optimizer, args):
    """Each mode trains on its own gradients, as PackedTrainer.step does; per-step per-trial losses."""
    cuda = dev == "cuda"
    graph = spec["graph"] and cuda
    model, weights, routing, decoder = build(pk, config, dev, dtype, fused=spec["fused"], compile_=spec["compile"],
                                             opaque=spec["opaque"], seed_state=state0)
    bench = Bench(model, weights, routing, decoder, len(RANKS))
    runner = runner_for(bench)
    optim = make_optimizer(weights)
    lrs, active = [args.train_lr] * len(RANKS), [True] * len(RANKS)
    losses = []
    for seqs in train_steps:
        weights.zero_grad()
        step_loss = torch.zeros(len(RANKS), device=weights.flat.device)
        for part in pk.batches.cut_chunks(seqs, runner.n_tokens, **runner.limits()):
            runner.load(part)
            step_loss += _drive(runner, graph)
        optim.step(lrs, active)
        losses.append(step_loss.tolist())
    return losses


if __name__ == "__main__":
    sys.exit(main())
