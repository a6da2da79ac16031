"""``run_training``: one LoRA run from a validated config to ``DIR/final`` and ``DIR/metrics.json``.

Why a plain PyTorch loop rather than TRL's ``SFTTrainer``: the run folder is a contract other
services follow (``events.jsonl``, atomic ``checkpoints/step-N`` with a manifest so a corrupt
one is detected and skipped, the data position inside the checkpoint so a resumed run repeats
the uninterrupted one to 1e-4), early stopping may score *generation* accuracy, and the same
loop must drive the Unsloth model. ``transformers.Trainer`` writes checkpoints in place (a kill
mid-save leaves a half folder it will try to resume from) and owns the data order. From TRL we
take its padding collator (``DataCollatorForLanguageModeling``), fed labels that are -100 over
the prompt — the same masking ``SFTTrainer(completion_only_loss=True)`` applies to
prompt/completion data.

The bookkeeping (events, early stopping, checkpoint cadence, best-step restore, tracking,
metrics.json, plot) is ``train/loop.py``'s, shared with the packed job; this module is the
single-trial engine under it (``SingleEngine``: one model, one trial, ``checkpoints/step-N``).
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from spelltransfer.errors import ConfigError, DataError
from spelltransfer.train.checkpoints import (
    latest_valid_checkpoint, list_checkpoints, load_adapter_weights, load_checkpoint, prune_checkpoints, save_checkpoint,
)
from spelltransfer import run_folder
from spelltransfer.run_folder import RunFolder
from spelltransfer.train.config import RunConfig
from spelltransfer.train.loop import RESUMABLE_DIFFERENCES, open_run_folder  # noqa: F401  (re-exported)
from spelltransfer.train.dataset import BatchOrder, mix_tasks, read_split, tokenize_example

log = logging.getLogger(__name__)

@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    backend: str
    stop_reason: str          # max_steps | early_stopping
    stop_step: int
    best_step: int | None
    best_metrics: dict
    final_metrics: dict
    last_loss: float | None
    tokens_seen: int
    train_seconds: float
    metrics_path: Path
    plot_path: Path | None
    resumed_from: int | None = None
    history: list = field(default_factory=list)


def default_output_dir(config: RunConfig) -> Path:
    run_name = config.training.run_name or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(config.training.output_root) / config.training.experiment / run_name


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_training_examples(config: RunConfig):
    """Training records (spelling, plus any mixed-in tasks) and the validation sample."""
    training = config.training
    records = read_split(training.data_dir, "train")
    spelling = [r for r in records if r["task"] == "spelling"]
    if not spelling:
        raise DataError(f"{training.data_dir}/train.jsonl has no spelling examples")
    if training.train_limit:
        spelling = spelling[: training.train_limit]
    fractions = config.transfer.mix_fractions()
    words = sorted({r["word"] for r in records})  # training words only: eval words stay unseen
    train_records = mix_tasks(spelling, fractions, training.seed, words, config.transfer.aux_form(),
                              config.transfer.aux_symbol_fraction)
    trained_tasks = {"spelling"} | {task for task, fraction in fractions.items() if fraction > 0}
    validation = [r for r in read_split(training.data_dir, "validation") if r["task"] in trained_tasks]
    if not validation:
        raise DataError(f"{training.data_dir}/validation.jsonl has no examples of {sorted(trained_tasks)}")
    sample = random.Random(training.seed).sample(validation, min(training.eval_samples, len(validation)))
    return train_records, sample


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bf16 matmuls are emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if precision != "auto":
        return precision
    if device.startswith("cuda") or cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _autocast(device: str, precision: str):
    import torch

    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


class _Evaluator:
    """Validation metrics on a fixed sample: teacher-forced answer loss, and optionally accuracy."""

    def __init__(self, loaded, backend, examples, records, config: RunConfig, collator):
        self.loaded, self.backend, self.examples, self.records = loaded, backend, examples, records
        self.config, self.collator = config, collator

    def __call__(self, with_accuracy: bool) -> dict:
        import torch

        model, device = self.loaded.model, self.loaded.device
        batch_size = self.config.training.eval_batch_size
        self.backend.for_inference(model)
        total_loss, total_tokens = 0.0, 0
        try:
            with torch.no_grad():
                for start in range(0, len(self.examples), batch_size):
                    chunk = self.examples[start:start + batch_size]
                    batch = self.collator([{"input_ids": e.input_ids, "labels": e.labels} for e in chunk])
                    batch = {k: v.to(device) for k, v in batch.items()}
                    with _autocast(device, self.config.training.precision):
                        loss = self.backend.loss(model, batch)
                    tokens = int((batch["labels"][:, 1:] != -100).sum())
                    total_loss += float(loss) * tokens
                    total_tokens += tokens
            metrics = {"eval_loss": total_loss / max(1, total_tokens)}
            if with_accuracy:
                metrics.update(self._accuracy())
        finally:
            self.backend.for_training(model)
        return metrics

    def _accuracy(self) -> dict:
        """Greedy-generation exact match on the validation sample, through the evaluator's own engine
        and answer extraction (so it agrees with `spelltransfer eval`); micro-averaged over tasks."""
        from spelltransfer.evaluate import HFGenerationEngine, evaluate_model
        from spelltransfer.evaluate.evaluator import accuracy_metrics

        # Unsloth's inference path returns legacy tuple KV caches, which the engine's shared-prefix
        # cache cannot copy; without prefix sharing it generates through plain model.generate.
        engine = HFGenerationEngine(model_name="in-training", batch_size=self.config.training.eval_batch_size,
                                    share_prefix=self.backend.name != "unsloth",
                                    model=self.loaded.model, tokenizer=self.loaded.tokenizer)
        return accuracy_metrics(evaluate_model(engine, self.records, progress=False).tasks)


class SingleEngine:
    """One trial on one model (the hf or unsloth backend): the K = 1 engine of ``TrainingLoop``.

    Its checkpoints are ``checkpoints/step-N`` folders (adapter, optimizer, scheduler, RNG, the
    trial's bookkeeping state and data position), written every ``save_steps``, at each new best
    step (the best weights are restored from there) and at the trial's end."""

    def __init__(self, config: RunConfig, folder: RunFolder, loaded, backend, train_examples, eval_examples,
                 eval_records, collator, optimizer, scheduler, order: BatchOrder):
        self.config, self.folder, self.loaded, self.backend_impl = config, folder, loaded, backend
        self.backend, self.device, self.base_model = backend.name, loaded.device, loaded.model_path
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.train_examples, self.collator = train_examples, collator
        self.optimizer, self.scheduler, self.order = optimizer, scheduler, order
        self.evaluator = _Evaluator(loaded, backend, eval_examples, eval_records, config, collator)
        self.step_index, self.stopped, self.last = 0, False, None
        self._lr = None
        self._best_step: int | None = None

    def resume(self) -> tuple[int | None, dict | None]:
        """Load the newest valid checkpoint: (its step, the trial's saved state); (None, None) if none."""
        root = self.folder.checkpoints
        checkpoint = latest_valid_checkpoint(root)
        if checkpoint is None:
            log.warning("no valid checkpoint in %s; starting from step 0", root)
            return None, None
        state = load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler)
        self.step_index, self.last = state["step"], state.get("last_loss")
        if state["examples_consumed"] != self.order.examples_consumed(self.step_index):
            raise DataError(f"{checkpoint.path}: data position {state['examples_consumed']} does not match step "
                            f"{self.step_index}; the training data changed")
        self._best_step = state["early_stopping"].get("best_step")
        return checkpoint.step, state

    def active(self) -> list[int]:
        return [] if self.stopped or self.step_index >= self.config.training.max_steps else [0]

    def step(self) -> dict[int, int]:
        import torch

        training, model, device = self.config.training, self.model, self.device
        indices = self.order.batch(self.step_index)
        self._lr = self.optimizer.param_groups[0]["lr"]
        micro = training.batch_size // training.grad_accum
        step_loss, tokens = 0.0, 0
        for start in range(0, len(indices), micro):
            chunk = [self.train_examples[i] for i in indices[start:start + micro]]
            batch = self.collator([{"input_ids": e.input_ids, "labels": e.labels} for e in chunk])
            batch = {k: v.to(device) for k, v in batch.items()}
            tokens += int(batch["attention_mask"].sum())
            with _autocast(device, training.precision):
                loss = self.backend_impl.loss(model, batch) / training.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
        if self.config.optimizer.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                           self.config.optimizer.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_index += 1
        self.last = step_loss
        return {0: tokens}

    def losses(self, trials: list[int]) -> dict[int, float]:
        return {0: self.last}

    def lr(self, trial: int, step: int) -> float:
        return self._lr

    def validate(self, trials: dict[int, bool]) -> dict[int, dict]:
        return {0: self.evaluator(with_accuracy=trials[0])} if trials else {}

    def keep_best(self, trial: int, step: int) -> None:
        self._best_step = step   # saved as a checkpoint this step (save), restored from there (export)

    def stop(self, trial: int) -> None:
        self.stopped = True

    def save(self, step, books, due, improved, ending) -> dict[int, str]:
        if not (due or improved or ending):
            return {}
        book = books[0]
        state = {**book.state_dict(), "examples_consumed": self.order.examples_consumed(step), "last_loss": self.last}
        root = self.folder.checkpoints
        saved = save_checkpoint(root, step, self.model, self.optimizer, self.scheduler, state)
        keep = {book.best_step} if book.best_step is not None else set()
        prune_checkpoints(root, self.config.training.keep_last, keep)
        return {0: str(saved.path)}

    def export(self, trial: int, out_dir: Path, best_step: int | None, stop_step: int) -> None:
        if best_step is not None and best_step != stop_step:
            best = next(c for c in list_checkpoints(self.folder.checkpoints) if c.step == best_step)
            load_adapter_weights(best.path, self.model)
        self.model.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)

    def last_loss(self, trial: int) -> float | None:
        return self.last

    def finish_extras(self, trials: list[int]) -> dict[int, dict]:
        return {}


def run_training(config: RunConfig, output_dir: str | Path | None = None, resume: bool = False,
                 on_event: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a LoRA adapter; see the module docstring for the output folder."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from spelltransfer.models import PromptFormat
    from spelltransfer.train.backends import get_backend
    from spelltransfer.train.loop import TrainingLoop, TrialBookkeeper
    from spelltransfer.train.optim import build_optimizer, build_scheduler

    training = config.training
    if output_dir is None:
        if resume and not training.run_name:
            raise ConfigError("--resume needs --output-dir or training.run_name to find the run")
        output_dir = default_output_dir(config)
    output_dir = Path(output_dir)
    writer = open_run_folder(config, output_dir, resume, on_event)
    book = TrialBookkeeper(config, writer, output_dir=output_dir, metrics_fsync=False)
    try:
        if training.num_threads:
            torch.set_num_threads(training.num_threads)
        _seed_everything(training.seed)
        backend = get_backend(training.backend)
        loaded = backend.load(config.model, training.seed)
        model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
        prompt_format = PromptFormat.from_tokenizer(tokenizer)
        train_records, eval_records = load_training_examples(config)
        max_len = config.model.max_seq_length
        train_examples = [tokenize_example(r, tokenizer, prompt_format, max_len) for r in train_records]
        eval_examples = [tokenize_example(r, tokenizer, prompt_format, max_len) for r in eval_records]
        collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
        order = BatchOrder(len(train_examples), training.batch_size, training.seed)
        optimizer = build_optimizer(model.parameters(), config.optimizer)
        scheduler = build_scheduler(optimizer, config.scheduler, training.max_steps)
        engine = SingleEngine(config, writer.folder, loaded, backend, train_examples, eval_examples, eval_records,
                              collator, optimizer, scheduler, order)
        resumed_from = None
        if resume:
            resumed_from, state = engine.resume()
            if state is not None:
                book.load_state_dict(state)

        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        book.start(engine.step_index, resumed_from, {"backend": backend.name, "output_dir": str(output_dir.resolve())},
                   backend=backend.name, device=device, max_steps=training.max_steps,
                   precision=resolve_precision(training.precision, device),
                   train_examples=len(train_examples), eval_examples=len(eval_examples), trainable_params=trainable)
        model.train()
        summary, metrics_path, plot_path = TrainingLoop(engine, {0: book}, resumed_from=resumed_from).run()[0]
    except BaseException as error:
        book.fail(error)
        raise
    finally:
        writer.close()
    history = book.history
    return TrainResult(output_dir, writer.folder.final, backend.name, summary["stop"]["reason"], book.stop_step,
                       book.best_step, run_folder.best_metrics(history, book.best_step), run_folder.final_metrics(history),
                       engine.last, book.tokens_seen, summary["train_seconds_this_session"], metrics_path, plot_path,
                       resumed_from, history)
