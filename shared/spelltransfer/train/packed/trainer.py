"""``PackedTrainer``: K LoRA trials trained at once on one frozen base model.

Each optimizer step of the packed run is one optimizer step of every active trial: trial k draws
its ``batch_size`` examples (``BatchOrder``, the same order the single-trial trainer uses with
that seed), all trials' sequences go through the model together (cut into chunks of at most
``max_chunk_tokens`` tokens), and the loss summed over trials is back-propagated once. Trials
share no trainable weight and no attention (sequences never see each other), so the gradient a
trial receives is exactly the gradient it would receive trained alone; the tests check that a
trial ends at the same loss packed as alone.

Logits are computed only at positions whose next token is part of an answer -- the prompt's
49,152-wide logits are never formed.

    trainer = PackedTrainer(model, tokenizer, records, trials)
    history = trainer.train()                      # per trial: loss at every step
    trainer.export(k, "adapters/trial-000")        # a PEFT adapter folder
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from spelltransfer.errors import ConfigError, DataError
from spelltransfer.train.dataset import BatchOrder, tokenize_example
from spelltransfer.train.model_config import LLAMA_STYLE, ModelConfig
from spelltransfer.train.optim import OptimizerConfig, SchedulerConfig, lr_factor
from spelltransfer.train.packed import attention
from spelltransfer.train.packed.batches import LAYOUTS, PreparedExample, Sequence, build_chunk, cut_chunks, plan_step
from spelltransfer.train.packed.chunk_loss import chunk_loss
from spelltransfer.train.packed.multi_lora import export_adapter, inject_multi_lora
from spelltransfer.train.packed.optimizer import MultiTrialAdamW, _to_device
from spelltransfer.train.packed.trials import TrialSpec

log = logging.getLogger(__name__)


@dataclass
class StepStats:
    step: int
    tokens: int            # real tokens processed (prompt + answer, no padding)
    padded_tokens: int     # tokens the model computed on (with padding)
    scored_tokens: int     # answer positions scored
    seconds: float


@dataclass
class PackedHistory:
    losses: list[list[float]] = field(default_factory=list)   # [trial][step]
    steps: list[StepStats] = field(default_factory=list)


def prepare_examples(records: list[dict], tokenizer, max_seq_length: int | None = None) -> list[PreparedExample]:
    """Tokenize once (prompt masked, answer + end-of-turn as target); reusable across trainers.
    ``max_seq_length`` None = ``ModelConfig``'s default."""
    from spelltransfer.models import PromptFormat

    if max_seq_length is None:
        max_seq_length = ModelConfig().max_seq_length
    prompt_format = PromptFormat.from_tokenizer(tokenizer)
    return [PreparedExample.from_tokenized(t.input_ids, t.labels)
            for t in (tokenize_example(r, tokenizer, prompt_format, max_seq_length) for r in records)]


class PackedTrainer:
    def __init__(self, model, tokenizer, train_records: list[dict], trials: list[TrialSpec], *,
                 scheduler: SchedulerConfig | None = None, betas: tuple[float, float] | None = None,
                 eps: float | None = None, target_modules: list[str] | None = None, max_seq_length: int | None = None,
                 max_chunk_tokens: int = 32768,
                 layout: str = "auto", kernel: str = "auto", base_model_path: str = "",
                 prepared: list[PreparedExample] | None = None, cuda_graphs: bool | str = "auto",
                 max_scored_fraction: float = 0.3, fused: bool | str = "auto", compile: bool | str = "auto"):
        if not trials:
            raise ConfigError("trials: need at least one trial")
        ids = [t.trial_id for t in trials]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"trials: trial ids must be unique (got {ids})")
        if not train_records:
            raise DataError("no training examples")
        # None = the run config's default (OptimizerConfig, SchedulerConfig, ModelConfig own them).
        optimizer_defaults = OptimizerConfig()
        betas = tuple(optimizer_defaults.betas) if betas is None else betas
        eps = optimizer_defaults.eps if eps is None else eps
        max_seq_length = ModelConfig().max_seq_length if max_seq_length is None else max_seq_length
        device = next(model.parameters()).device
        if layout == "auto":
            layout = "varlen" if attention.varlen_available(device) else "padded"
        if layout not in LAYOUTS:
            raise ConfigError(f"layout: must be auto, {' or '.join(LAYOUTS)} (got {layout!r})")
        if max_chunk_tokens < max_seq_length:
            raise ConfigError(f"max_chunk_tokens ({max_chunk_tokens}) must be >= max_seq_length ({max_seq_length})")
        self.model, self.tokenizer, self.trials = model, tokenizer, list(trials)
        self.device, self.layout, self.max_chunk_tokens = device, layout, max_chunk_tokens
        self.scheduler = scheduler or SchedulerConfig()
        self.base_model_path = base_model_path
        self.target_modules = list(target_modules or LLAMA_STYLE)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        self.examples = prepared if prepared is not None else prepare_examples(train_records, tokenizer, max_seq_length)
        self.weights, self.routing = inject_multi_lora(model, self.target_modules, [t.r for t in trials],
                                                       [t.alpha for t in trials], kernel=kernel)
        for k, trial in enumerate(trials):
            self.weights.init_trial(k, trial.seed)
        self.orders = [BatchOrder(len(self.examples), t.batch_size, t.seed) for t in trials]
        self.optimizer = MultiTrialAdamW(self.weights, [t.weight_decay for t in trials],
                                         [t.max_grad_norm for t in trials], betas, eps)
        if layout == "varlen":
            attention.register()
            attention.set_attention(model, attention.ATTENTION_NAME)
        else:
            attention.set_attention(model, "sdpa")
        self.max_seq_length = max_seq_length
        self.max_scored = int(max_chunk_tokens * max_scored_fraction)
        graphs_possible = (layout == "varlen" and self.kernel == "grouped" and device.type == "cuda"
                           and attention.varlen_supports_empty(device))
        if cuda_graphs == "auto":
            cuda_graphs = graphs_possible
        elif cuda_graphs and not graphs_possible:
            raise ConfigError("cuda_graphs: needs CUDA, the varlen layout and the grouped kernel")
        self.cuda_graphs = bool(cuda_graphs)
        self._graph_runner = None
        self._graph_pass = False   # True while GraphedChunks runs Python (warm-up, capture): fixed shapes
        self.fused = self._fused_decoder(fused, compile)
        self.step_index = 0
        self.history = PackedHistory(losses=[[] for _ in trials])
        self.stopped: set[int] = set()   # trials ended before max_steps (stop_trial)
        self._pending: list[torch.Tensor] = []   # per-step loss vectors not yet copied to the host

    def _fused_decoder(self, fused: bool | str, compile: bool | str):
        """The fused decoder (fused.py) when asked for; ``auto`` means off (see below).

        Measured on an H100 (docs/performance.md section 6): eager, the fused decoder trains the
        same losses as the HF decoder but is no faster at K = 64, and its CUDA-graph capture at
        32k-token chunks ran out of memory; with ``torch.compile`` it ran 1.85x faster (216k tok/s)
        but its losses fell faster than the reference's from step 2 on (wrong gradients from the
        compiled ``post_attention`` on CUDA; not reproduced on CPU, where compiled and eager agree).
        So both stay opt-in: ``fused=True`` is correct; ``compile=True`` is for finding that bug.

        The compiled layer functions run only in the CUDA-graph pass (``_graph_pass``), whose chunks
        all have the graph's fixed shapes: compiled with ``dynamic=False``, every other chunk size
        would be a recompile and the 9th would raise (``FailOnRecompileLimitHit``). So steps
        without graphs (CPU, a failed capture) and ``eval_losses`` run the eager fused layers. The
        slice-loop kernel is refused: its trial boundaries are python ints, guarded by Dynamo, so
        every new set of boundaries would recompile (and graphs need the grouped kernel anyway).
        """
        from spelltransfer.train.packed.fused import FusedDecoder

        why_not = FusedDecoder.supports(self.model) if self.layout == "varlen" else "the padded layout"
        if compile == "auto":
            compile = False
        if fused == "auto":
            fused = bool(compile) and why_not is None
        if fused and why_not is not None:
            raise ConfigError(f"fused: this run cannot use the fused decoder ({why_not})")
        if compile and not fused:
            raise ConfigError("compile: needs the fused decoder")
        if compile and self.kernel != "grouped":
            raise ConfigError(f"compile: needs the grouped LoRA kernel (got {self.kernel!r}: the slice loop's trial "
                              "boundaries are python ints, so every new set of them would be a recompile)")
        if compile and not self.cuda_graphs:
            log.warning("compile=True without CUDA graphs: the compiled layer functions run only on the graphs' "
                        "fixed shapes, so this run trains with the eager fused layers")
        if compile and self.device.type == "cuda":
            log.warning("compile=True: the compiled fused decoder's gradients disagree with the reference on CUDA "
                        "(docs/performance.md section 6); use it only to investigate that")
        return FusedDecoder(self.model, self.weights, self.routing, compile=bool(compile)) if fused else None

    def _graphs(self):
        """The CUDA-graph runner, created on first use when enabled (see graphs.py)."""
        if not self.cuda_graphs:
            return None
        if self._graph_runner is None:
            from spelltransfer.train.packed.graphs import GraphedChunks

            self._graph_runner = GraphedChunks(self, self.max_chunk_tokens, self.max_scored, self.max_seq_length)
        return self._graph_runner

    @property
    def kernel(self) -> str:
        from spelltransfer.train.packed.multi_lora import MultiLoRALinear

        return next(m.kernel for m in self.model.modules() if isinstance(m, MultiLoRALinear))

    def active(self) -> list[bool]:
        return [self.step_index < t.max_steps and k not in self.stopped for k, t in enumerate(self.trials)]

    def stop_trial(self, k: int) -> None:
        """End trial k now (early stopping, cancel): it draws no more batches and its weights stay as they are.

        The other trials are unaffected -- no trial's gradient depends on another's tokens.
        """
        if not 0 <= k < len(self.trials):
            raise IndexError(f"trial index {k} out of range (0..{len(self.trials) - 1})")
        self.stopped.add(k)

    def done(self) -> bool:
        return not any(self.active())

    def _step_batches(self) -> dict[int, list[list[PreparedExample]]]:
        batches = {}
        for k, (trial, on) in enumerate(zip(self.trials, self.active())):
            if not on:
                continue
            indices = self.orders[k].batch(self.step_index)
            micro = trial.micro_batch
            batches[k] = [[self.examples[i] for i in indices[j:j + micro]] for j in range(0, len(indices), micro)]
        return batches

    def loss_on_device(self, input_ids, position_ids, attention_mask, cu, max_len, predict_at, targets, weights, trial_of):
        """Weighted answer loss of one chunk (summed over trials) and its per-trial parts [K] (chunk_loss.py).

        Compiled fused layers run only in the CUDA-graph pass, on its fixed shapes (see _fused_decoder)."""
        return chunk_loss(self.model, self.fused, len(self.trials), input_ids, position_ids, attention_mask, cu, max_len,
                          predict_at, targets, weights, trial_of, eager=not self._graph_pass)

    def _forward_loss(self, chunk) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.device
        move = lambda t: _to_device(t, dev) if t is not None else None  # noqa: E731
        self.routing.set_token_ends(chunk.token_ends, move(torch.tensor(chunk.token_ends, dtype=torch.int32)))
        return self.loss_on_device(move(chunk.input_ids), move(chunk.position_ids), move(chunk.attention_mask),
                                   move(chunk.cu_seqlens), chunk.max_len, move(chunk.predict_at), move(chunk.targets),
                                   move(chunk.weights), move(chunk.trial_of))

    def step(self) -> StepStats:
        """One optimizer step of every active trial."""
        if self.done():
            raise RuntimeError("every trial has reached its max_steps")
        started = time.perf_counter()
        self.model.train()
        active = self.active()
        sequences = plan_step(self._step_batches())
        step_loss = torch.zeros(len(self.trials), dtype=torch.float32, device=self.device)
        tokens = padded = scored = 0
        graphs = self._graphs()
        for part in cut_chunks(sequences, self.max_chunk_tokens, **(graphs.limits() if graphs else {})):
            if graphs is not None:
                try:
                    n_real, n_scored = graphs.load(part)
                    self._graph_pass = True
                    try:
                        step_loss += graphs.run()
                    finally:
                        self._graph_pass = False
                    tokens += n_real
                    padded += graphs.n_tokens
                    scored += n_scored
                    continue
                except Exception as error:  # noqa: BLE001
                    if graphs.graph is not None:
                        raise  # a replay failing is a real error
                    log.warning("CUDA graph capture failed (%s: %s); training on without graphs", type(error).__name__, error)
                    self.cuda_graphs, self._graph_runner, graphs = False, None, None
                    if self.fused is not None:
                        self.fused.disable_compile()   # compiled layers need the graphs' fixed shapes
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
            chunk = build_chunk(part, len(self.trials), self.layout, self.pad_id)
            loss, per_trial = self._forward_loss(chunk)
            loss.backward()
            step_loss += per_trial
            tokens += chunk.n_tokens
            padded += chunk.input_ids.numel()
            scored += int(chunk.targets.numel())
        lrs = [t.lr * lr_factor(self.step_index, self.scheduler, t.max_steps) for t in self.trials]
        self.optimizer.step(lrs, active)
        self.weights.zero_grad()
        mask = _to_device(torch.tensor(active), self.device)
        self._pending.append(torch.where(mask, step_loss, torch.full_like(step_loss, float("nan"))))
        self.step_index += 1
        stats = StepStats(self.step_index, tokens, padded, scored, time.perf_counter() - started)
        self.history.steps.append(stats)
        return stats

    def flush(self) -> None:
        """Copy pending per-step losses to the host (one sync for many steps)."""
        if not self._pending:
            return
        rows = torch.stack(self._pending).tolist()
        self._pending.clear()
        for row in rows:
            for k, value in enumerate(row):
                if value == value:  # NaN marks a finished trial
                    self.history.losses[k].append(value)

    def train(self, max_packed_steps: int | None = None, flush_every: int = 20, on_step=None,
              time_budget_s: float | None = None) -> PackedHistory:
        started = time.perf_counter()
        while not self.done() and (max_packed_steps is None or self.step_index < max_packed_steps):
            stats = self.step()
            if self.step_index % flush_every == 0:
                self.flush()
            if on_step is not None:
                on_step(stats)
            if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
                log.warning("time budget of %.0f s reached at packed step %d", time_budget_s, self.step_index)
                break
        self.flush()
        return self.history

    def state_dict(self) -> dict:
        """Everything needed to continue: adapters, optimizer moments, step counts, history."""
        self.flush()
        return {"flat": self.weights.flat.detach().cpu(), "optimizer": {k: (v.cpu() if torch.is_tensor(v) else v)
                                                                         for k, v in self.optimizer.state_dict().items()},
                "step_index": self.step_index, "losses": self.history.losses,
                "trials": [t.model_dump() for t in self.trials], "stopped": sorted(self.stopped)}

    def load_state_dict(self, state: dict) -> None:
        if state["trials"] != [t.model_dump() for t in self.trials]:
            raise ConfigError("resume: the saved packed state was trained with different trials")
        with torch.no_grad():
            self.weights.flat.copy_(state["flat"])
            self.optimizer.exp_avg.copy_(state["optimizer"]["exp_avg"])
            self.optimizer.exp_avg_sq.copy_(state["optimizer"]["exp_avg_sq"])
        self.optimizer.steps = list(state["optimizer"]["steps"])
        self.step_index = int(state["step_index"])
        self.history.losses = [list(h) for h in state["losses"]]
        self.stopped = set(state.get("stopped", []))   # absent in states saved before stop_trial existed

    def export(self, k: int, out_dir, extra_files: dict[str, str] | None = None):
        """Trial k as a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)."""
        return export_adapter(self.weights, k, out_dir, self.target_modules, self.base_model_path, extra_files)

    @torch.no_grad()
    def eval_losses(self, samples: dict[int, list[PreparedExample]]) -> dict[int, float]:
        """Teacher-forced answer loss of each trial k on its own validation sample ``samples[k]``.

        The mean over all answer tokens of the sample -- what the single-trial trainer's validation
        reports as ``eval_loss`` -- for every listed trial in one no-grad pass of the packed model
        (each sequence routed to its trial's adapter), with the model in eval mode meanwhile.
        """
        n_trials = len(self.trials)
        sequences = []
        for k in sorted(samples):
            if not 0 <= k < n_trials:
                raise IndexError(f"trial index {k} out of range (0..{n_trials - 1})")
            n_answer = sum(e.n_answer for e in samples[k])
            weight = 1.0 / n_answer if n_answer else 0.0
            sequences.extend(Sequence(k, e, weight) for e in samples[k])
        totals = torch.zeros(n_trials, dtype=torch.float32, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            for part in cut_chunks(sequences, self.max_chunk_tokens):
                _, per_trial = self._forward_loss(build_chunk(part, n_trials, self.layout, self.pad_id))
                totals += per_trial
        finally:
            self.model.train(was_training)
        values = totals.tolist()
        return {k: values[k] for k in sorted(samples)}

    @property
    def training_attention(self) -> str:
        """The attention implementation training uses (``generate_for_trials(restore_attention=...)``)."""
        return attention.ATTENTION_NAME if self.layout == "varlen" else "sdpa"

    def trial_row(self, k: int) -> torch.Tensor:
        """A copy of trial k's adapter weights (its row of the flat buffer), e.g. to keep its best step."""
        return self.weights.flat[k].detach().clone()

    def set_trial_row(self, k: int, row: torch.Tensor) -> None:
        """Put back weights taken with ``trial_row`` (e.g. the best step's before ``export``)."""
        with torch.no_grad():
            self.weights.flat[k].copy_(row.to(self.weights.flat.device))
