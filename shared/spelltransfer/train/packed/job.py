"""A pack job: K training trials of the trainer worker run as one process on one frozen base model.

    python -m spelltransfer.train.packed.job --pack-dir DIR [--resume]

``DIR/pack.json`` (written by ``spelltransfer.platform.worker``) lists the members: ``trial_id``,
``config_path`` + ``overrides`` (the same training config ``spelltransfer train`` would get) and
``output_dir``. Each member's config becomes a ``TrialSpec`` and all of them train in one
``PackedTrainer``; each member's ``output_dir`` gets the same run-folder contract as
``spelltransfer train`` (docs/architecture.md), so the worker and the sweep controller follow a
packed member exactly like a lone run -- the events, early stopping, tracking and metrics.json
are written by the same loop (``train/loop.py``, one ``TrialBookkeeper`` per member; ``PackJob``
is its packed engine):

* ``config.yaml``; ``events.jsonl`` with ``start`` (backend ``packed``, ``pack_id``,
  ``resumed_from``), ``step`` (loss, lr, tokens) every ``logging_steps``, ``eval`` (``eval_loss``,
  and the accuracies when early stopping scores accuracy) every ``eval_steps``, ``checkpoint`` at
  each pack save, ``done`` (or ``error``);
* ``final/`` -- the PEFT adapter (best step's weights under early stopping, as ``run_training``)
  plus the tokenizer files;
* ``validation_eval.json`` (+ predictions) -- greedy generation on the validation split as
  ``platform.eval_job --run-dir`` would score it, for every member finishing at the same step in
  one batched ``generate_for_trials`` per token budget (the budgets are the evaluator's, so an
  item never gets more new tokens than ``spelltransfer eval`` gives it);
* ``metrics.json`` -- ``run_training``'s summary keys, plus ``validation`` (the evaluation result,
  the shape the worker's eval phase stores) so the worker needs no evaluation subprocess.
  Written last and atomically: it is the worker's signal that the member is finished.

Why one process for K trials: a LoRA trial of a 135M model leaves a GPU mostly idle; packed, the
base model's matmuls serve all trials (docs/performance.md section 2). A member's losses equal
the same config trained alone to float rounding (``tests/train/test_packed_job.py``).

What may differ inside a pack is only what ``TrialSpec`` carries (``TRIAL_FIELDS``: seed, LoRA r
and alpha, lr, weight decay, clipping, batch size, grad accumulation, max steps) and what only
changes a member's own logging, evaluation and stopping (``MEMBER_FIELDS``). Everything else
changes the shared computation (model, dtype, sequence length, target modules, data, schedule,
Adam betas/eps, ...) and must be equal, else ``ConfigError`` names the field. ``pack_key(config)``
hashes those shared fields so the worker groups compatible trials; it returns None for a config
the packed trainer cannot reproduce (LoRA dropout, 4-bit weights, gradient checkpointing, another
optimizer, a ``training.precision`` other than the weights' dtype, ``training.backend: unsloth`` asked
for by name -- ``auto`` is the engine's choice), which the worker then runs
alone; ``run_pack`` refuses such a member with a ConfigError naming the setting. The seed joins the key when tasks are mixed into training: the mixed-in
examples are drawn with the seed, so members would not share their training set otherwise.

Numerics: the base model is loaded with ``model.dtype`` (auto = bf16 on CUDA, fp32 on CPU), the
adapters are kept in fp32 and cast to the weights' dtype in the forward pass, with no autocast. That
is what ``run_training`` computes when ``training.precision`` resolves to the same dtype (the
default: auto/auto), so a config asking for anything else is not packable (``unpackable_reason``).
The parity test (``tests/train/test_engine_parity.py``) trains one config alone, packed alone and
packed with two others, and compares every step.

Cancel: ``OUTPUT_DIR/CANCEL`` drops that member at the next step (``done`` with reason
``cancelled``, no metrics.json); the others go on.

Checkpoints: every ``save_steps`` (the smallest of the members) the whole pack -- adapters,
optimizer moments, step, per-member early stopping, eval history, best weights, which members
are finished or cancelled -- goes atomically to ``DIR/state.pt``. ``--resume`` continues from it;
a member whose metrics.json exists is finished and skipped (it may have finished after the last
save), one with a CANCEL file is dropped. Steps after the saved one are logged again, as in
``run_training`` (a follower keeps the last line for each step).

Tracking: each member gets its own trackers (``build_tracker``, as ``run_training``): the MLflow
tracker uses ``MlflowClient`` and W&B ``reinit="create_new"``, so K runs live side by side in
one process. Step metrics are logged at ``logging_steps`` like a lone run.

Exit codes: 0 done, 2 bad input (``ConfigError``/``DataError``, message on stderr), else a crash.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spelltransfer.errors import ConfigError, SpellTransferError, format_validation_error
from spelltransfer.run_folder import CANCEL_FILE, PACK_STATE_FILE as STATE_FILE, PackFolder, RunReader, RunWriter  # noqa: F401
from spelltransfer.train.config import RunConfig, load_training_config
from spelltransfer.train.packed.trials import TRIAL_FIELDS, TrialSpec

log = logging.getLogger(__name__)

# Fields (and sections) that only change a member's own logging, evaluation, stopping and files.
MEMBER_FIELDS = (
    "training.experiment", "training.run_name", "training.output_root", "training.plot_dir", "training.tracking",
    "training.logging_steps", "training.eval_steps", "training.eval_samples", "training.eval_batch_size",
    "training.save_steps", "training.keep_last", "training.early_stopping",
    "transfer.eval_tasks", "transfer.eval_items_per_task",
)


# ----------------------------------------------------------------------------- pack.json


class PackMember(BaseModel):
    """One trial of a pack, as the worker hands it over."""

    model_config = ConfigDict(extra="forbid")

    trial_id: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="The worker's trial id.")
    config_path: str = Field(..., min_length=1, description="Training config YAML (as `spelltransfer train --config`).")
    overrides: list[str] = Field(default_factory=list, description="`section.key=value` overrides (as `--set`).")
    output_dir: str = Field(..., min_length=1, description="The member's run folder.")


class PackManifest(BaseModel):
    """``DIR/pack.json``: which trials train together. Member order is the packed trainer's trial order."""

    model_config = ConfigDict(extra="forbid")

    pack_id: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="Name of the pack (its folder).")
    members: list[PackMember] = Field(..., min_length=1, description="The trials, in trial order.")


def read_manifest(pack_dir: str | Path) -> PackManifest:
    path = PackFolder(pack_dir).manifest
    if not path.is_file():
        raise ConfigError(f"{path} does not exist (the worker writes it before starting the pack)")
    try:
        manifest = PackManifest.model_validate_json(path.read_text())
    except ValidationError as error:
        raise ConfigError(f"{path}: {format_validation_error(error, root='pack')}") from None
    ids = [m.trial_id for m in manifest.members]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: members: trial ids must be unique (got {ids})")
    return manifest


def write_manifest(pack_dir: str | Path, manifest: PackManifest) -> Path:
    """Write ``DIR/pack.json`` atomically (a reader never sees half of it)."""
    from spelltransfer.atomic import write_text_atomic

    pack_dir = Path(pack_dir)
    pack_dir.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(PackFolder(pack_dir).manifest, manifest.model_dump_json(indent=1))


# ----------------------------------------------------------------------------- which configs pack together


def _is_member_field(key: str) -> bool:
    return key in TRIAL_FIELDS or any(key == f or key.startswith(f + ".") for f in MEMBER_FIELDS)


def shared_fields(config: RunConfig) -> dict[str, Any]:
    """Dotted key -> value of every field that must be equal across a pack."""
    flat = config.flat()
    shared = {key: value for key, value in flat.items() if not _is_member_field(key)}
    if any(fraction > 0 for fraction in config.transfer.mix_fractions().values()):
        shared["training.seed"] = config.training.seed   # the mixed-in examples are drawn with it
    return shared


def default_device() -> str:
    """The device a pack job trains on here (as the hf backend picks it)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def packed_compute_precision(config: RunConfig, device: str) -> str:
    """What the packed engine computes in on ``device``: the base weights' dtype (``model.dtype`` as
    ``load_model`` resolves it); the adapters are cast to it."""
    from spelltransfer.models.base_model import resolve_dtype

    return resolve_dtype(config.model.dtype, device)


def unpackable_reason(config: RunConfig, device: str | None = None) -> str | None:
    """Why the packed trainer cannot reproduce this config's training on ``device`` (None = this
    machine's), naming the setting; None if it can."""
    from spelltransfer.train.trainer import resolve_precision

    model = config.model
    if model.lora.dropout > 0:
        return f"model.lora.dropout: the packed trainer has no LoRA dropout (got {model.lora.dropout})"
    if model.load_in_4bit:
        return "model.load_in_4bit: the packed trainer needs the base weights unquantised"
    if model.gradient_checkpointing:
        return (f"model.gradient_checkpointing: the packed trainer does not recompute activations "
                f"(got {model.gradient_checkpointing!r}); set it false to pack")
    if config.training.backend == "unsloth":
        return ("training.backend: unsloth was asked for by name and the packed trainer is its own engine "
                "(plain torch on the base weights); set training.backend=auto to let the worker pack it")
    if config.optimizer.name != "adamw":
        return f"optimizer.name: the packed trainer implements adamw only (got {config.optimizer.name!r})"
    device = device or default_device()
    # run_training autocasts to training.precision over weights of model.dtype; the packed engine
    # computes in the weights' dtype. Equal, they train alike; else a trial's numerics would
    # depend on whether the worker packed it.
    wanted = resolve_precision(config.training.precision, device)
    computed = packed_compute_precision(config, device)
    if wanted != computed:
        return (f"training.precision: the packed trainer computes in the base weights' dtype ({computed} from "
                f"model.dtype={model.dtype} on {device}), not {wanted} (training.precision={config.training.precision}); "
                f"set training.precision={computed} or model.dtype to match to pack")
    return None


def pack_key(config: RunConfig, device: str | None = None) -> str | None:
    """A hash of the fields that must be equal within a pack; None if the config cannot be packed
    on ``device`` (None = this machine's)."""
    if unpackable_reason(config, device) is not None:
        return None
    text = json.dumps(shared_fields(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_compatible(configs: list[RunConfig], names: list[str], device: str | None = None) -> None:
    """ConfigError naming the first field that keeps these configs from training in one pack on ``device``."""
    device = device or default_device()
    for name, config in zip(names, configs):
        reason = unpackable_reason(config, device)
        if reason is not None:
            raise ConfigError(f"pack member {name}: {reason}")
    reference = shared_fields(configs[0])
    for name, config in zip(names[1:], configs[1:]):
        other = shared_fields(config)
        for key in sorted(set(reference) | set(other)):
            if reference.get(key) != other.get(key):
                raise ConfigError(
                    f"pack member {name}: {key} must equal member {names[0]}'s ({other.get(key)!r} vs "
                    f"{reference.get(key)!r}); within a pack only {', '.join(TRIAL_FIELDS)} and the members' "
                    "logging, evaluation and stopping settings may differ")


def trial_spec(config: RunConfig, trial_id: str) -> TrialSpec:
    """The ``TrialSpec`` of one member's config."""
    return TrialSpec.from_config(config, trial_id)


def load_member_configs(manifest: PackManifest) -> list[RunConfig]:
    """Each member's RunConfig (as ``spelltransfer train`` loads it), checked to be packable together."""
    configs = []
    for member in manifest.members:
        try:
            configs.append(load_training_config(member.config_path, member.overrides))
        except ConfigError as error:
            raise ConfigError(f"pack member {member.trial_id}: {error}") from None
    check_compatible(configs, [m.trial_id for m in manifest.members])
    return configs


# ----------------------------------------------------------------------------- the job


@dataclass(eq=False)   # identity: members are dict keys and compared by who they are
class _Member:
    """One member of the pack: its config, files, evaluation sample and best weights; its
    bookkeeping (events, tracker, early stopping, history) is ``book`` (``train/loop.py``)."""

    index: int
    spec: Any
    entry: PackMember
    config: RunConfig
    output_dir: Path
    book: Any = None                                      # TrialBookkeeper, once its run folder is open
    best_row: Any = None                                  # adapter weights of the best step (early stopping)
    finished: bool = False                                # finished before this process (metrics.json exists)
    eval_records: list = field(default_factory=list)
    eval_prepared: list = field(default_factory=list)

    @property
    def trial_id(self) -> str:
        return self.entry.trial_id

    @property
    def ended(self) -> bool:
        return self.finished or (self.book is not None and self.book.ended)


class PackJob:
    """Train the members of one pack folder (see the module docstring): the packed engine of
    ``TrainingLoop`` (``train/loop.py``), one trial per member."""

    backend = "packed"

    def __init__(self, pack_dir: str | Path, resume: bool = False):
        self.pack_dir = Path(pack_dir).resolve()
        self.resume = resume
        self.manifest = read_manifest(self.pack_dir)
        configs = load_member_configs(self.manifest)
        self.shared = configs[0]
        self.members = [_Member(k, trial_spec(c, m.trial_id), m, c, Path(m.output_dir).resolve())
                        for k, (m, c) in enumerate(zip(self.manifest.members, configs))]
        self.state_path = PackFolder(self.pack_dir).state
        if self.state_path.exists() and not resume:
            raise ConfigError(f"{self.pack_dir} already holds a pack state ({STATE_FILE}); pass --resume to continue it")
        self.trainer = None
        self.resumed_from: int | None = None
        self.device = "cpu"
        self.base_model = ""
        self._member_states: dict = {}

    # -- the run

    def run(self) -> dict[str, str]:
        """Train until every member is finished or cancelled; returns ``{trial_id: how it ended}``."""
        from spelltransfer.train.loop import TrainingLoop

        for member in self.members:
            if RunReader(member.output_dir).finished():
                member.finished = True   # finished before a restart (maybe after the last pack save)
        if all(m.finished or self._cancel_requested(m) for m in self.members):
            self._close_cancelled_before_start()
            return self._outcome()
        books = {}
        try:
            self._setup()
            books = {m.index: m.book for m in self.members if m.book is not None}
            loop = TrainingLoop(self, books, resumed_from=self.resumed_from,
                                cancel_requested=lambda k: self._cancel_requested(self.members[k]))
            loop.run()
        except BaseException as error:
            for member in self.members:
                if member.book is not None:
                    member.book.fail(error)
            raise
        finally:
            for member in self.members:
                if member.book is not None:
                    member.book.writer.close()
        return self._outcome()

    def _outcome(self) -> dict[str, str]:
        def how(m: _Member) -> str:
            if m.finished or (m.book is not None and m.book.finished):
                return "finished"
            if (m.book is not None and m.book.cancelled) or self._cancel_requested(m):
                return "cancelled"
            return "unfinished"

        return {m.trial_id: how(m) for m in self.members}

    def _setup(self) -> None:
        import torch

        from spelltransfer.models import load_model, load_tokenizer, resolve_model_path
        from spelltransfer.train.loop import TrialBookkeeper
        from spelltransfer.train.model_config import resolve_target_modules
        from spelltransfer.train.packed.trainer import PackedTrainer, prepare_examples
        from spelltransfer.train.loop import open_run_folder
        from spelltransfer.train.trainer import load_training_examples

        shared = self.shared
        if shared.training.num_threads:
            torch.set_num_threads(shared.training.num_threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.base_model = resolve_model_path(shared.model.name)
        target_modules = resolve_target_modules(self.base_model, shared.model.lora)
        tokenizer = load_tokenizer(shared.model.name)
        model = load_model(shared.model.name, dtype=shared.model.dtype, device=self.device)
        self.tokenizer = tokenizer

        # Training records are the same for every member (pack_key guarantees it); the validation
        # sample depends on each member's seed and eval_samples, so it is read per distinct pair.
        samples: dict[tuple[int, int], tuple[list, list]] = {}
        train_records = None
        max_len = shared.model.max_seq_length
        for member in self.members:
            key = (member.config.training.seed, member.config.training.eval_samples)
            if key not in samples:
                records, sample = load_training_examples(member.config)
                train_records = train_records if train_records is not None else records
                samples[key] = (sample, prepare_examples(sample, tokenizer, max_len))
            member.eval_records, member.eval_prepared = samples[key]
        prepared = prepare_examples(train_records, tokenizer, max_len)
        self.trainer = PackedTrainer(
            model, tokenizer, train_records, [m.spec for m in self.members], scheduler=shared.scheduler,
            betas=tuple(shared.optimizer.betas), eps=shared.optimizer.eps, target_modules=target_modules,
            max_seq_length=max_len, base_model_path=self.base_model, prepared=prepared)
        self.prepared = prepared

        if self.resume and self.state_path.is_file():
            state = torch.load(self.state_path, map_location="cpu", weights_only=False)
            if state.get("pack_id") != self.manifest.pack_id:
                raise ConfigError(f"{self.state_path}: saved by pack {state.get('pack_id')!r}, not {self.manifest.pack_id!r}")
            self.trainer.load_state_dict(state["trainer"])
            self._member_states = state["members"]
            self.resumed_from = int(state["step"])
        for member in self.members:
            saved = self._member_states.get(member.trial_id, {})
            member.best_row = saved.get("best_row")
            if member.finished or saved.get("finished") or saved.get("cancelled"):
                self.trainer.stop_trial(member.index)

        dtype = next(model.parameters()).dtype
        precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
        slots = self.trainer.weights.slots
        for member in self.members:
            saved = self._member_states.get(member.trial_id)
            if member.finished or (saved and (saved.get("finished") or saved.get("cancelled"))):
                continue
            config, training = member.config, member.config.training
            # step lines flushed, not fsynced: K members' fsyncs per step would dominate a GPU step
            writer = open_run_folder(config, member.output_dir, self.resume, flush_only=("step",))
            member.book = TrialBookkeeper(config, writer, output_dir=member.output_dir)
            if saved:
                member.book.load_state_dict(saved)
            trainable = sum(member.spec.r * (s.in_features + s.out_features) for s in slots)
            member.book.start(self.trainer.step_index, self.resumed_from,
                              {"backend": "packed", "pack_id": self.manifest.pack_id,
                               "output_dir": str(member.output_dir)},
                              backend="packed", pack_id=self.manifest.pack_id,
                              pack_members=[m.trial_id for m in self.members], device=self.device,
                              max_steps=training.max_steps, precision=precision, train_examples=len(prepared),
                              eval_examples=len(member.eval_prepared), trainable_params=trainable)

    # -- the Engine interface (train/loop.py)

    @property
    def step_index(self) -> int:
        return self.trainer.step_index

    def active(self) -> list[int]:
        return [k for k, on in enumerate(self.trainer.active()) if on]

    def step(self) -> dict[int, int]:
        running = self.active()
        self.trainer.step()
        step = self.trainer.step_index
        return {k: sum(len(self.prepared[i].ids) for i in self.trainer.orders[k].batch(step - 1)) for k in running}

    def losses(self, trials: list[int]) -> dict[int, float]:
        self.trainer.flush()   # one host sync, only on steps that log
        return {k: self.trainer.history.losses[k][-1] for k in trials}

    def lr(self, trial: int, step: int) -> float:
        from spelltransfer.train.optim import lr_factor

        spec = self.members[trial].spec
        return spec.lr * lr_factor(step - 1, self.shared.scheduler, spec.max_steps)

    def keep_best(self, trial: int, step: int) -> None:
        self.members[trial].best_row = self.trainer.trial_row(trial).cpu()

    def stop(self, trial: int) -> None:
        self.trainer.stop_trial(trial)

    def last_loss(self, trial: int) -> float | None:
        self.trainer.flush()
        losses = self.trainer.history.losses[trial]
        return losses[-1] if losses else None

    def export(self, trial: int, out_dir: Path, best_step: int | None, stop_step: int) -> None:
        member = self.members[trial]
        if best_step is not None and best_step != stop_step and member.best_row is not None:
            self.trainer.set_trial_row(trial, member.best_row)   # the trial has ended: its row is free
        self.trainer.export(trial, out_dir)
        self.tokenizer.save_pretrained(out_dir)

    # -- evaluation

    def validate(self, trials: dict[int, bool]) -> dict[int, dict]:
        """Validation metrics of ``trials`` on their samples: eval_loss for all in one pass, plus the
        accuracies (greedy generation, as ``run_training``) where ``trials[k]``."""
        members = [self.members[k] for k in sorted(trials)]
        if not members:
            return {}
        losses = self.trainer.eval_losses({m.index: m.eval_prepared for m in members})
        results = {m.index: {"eval_loss": losses[m.index]} for m in members}
        wants = [m for m in members if trials[m.index]]
        if wants:
            from spelltransfer.evaluate.evaluator import accuracy_metrics, prepare_items

            scored = self._score(wants, lambda m: (m.config.training.seed, m.config.training.eval_samples),
                                 lambda m: prepare_items(m.eval_records))
            for member in wants:
                results[member.index].update(accuracy_metrics(scored[member][1]))
        return results

    def _score(self, members: list[_Member], group_key, items_of) -> dict:
        """``{member: (predictions, {task: TaskMetrics}, seconds, n_items)}``: greedy answers of every
        member on its items (``items_of``: evaluation items, ``prepare_items``), members sharing items
        generated together (``generate_for_trials``) and scored by the evaluator's ``score_outputs``."""
        from collections import defaultdict

        from spelltransfer.evaluate.evaluator import score_outputs

        groups: dict = defaultdict(list)
        for member in members:
            groups[group_key(member)].append(member)
        out = {}
        for group in groups.values():
            group.sort(key=lambda m: m.index)
            items = items_of(group[0])
            started = time.perf_counter()
            outputs = self._generate([m.index for m in group], items,
                                     max(m.config.training.eval_batch_size for m in group))
            seconds = time.perf_counter() - started
            for member in group:
                predictions, tasks = score_outputs(items, outputs[member.index])
                out[member] = (predictions, tasks, seconds, len(items))
        return out

    def _generate(self, trial_indices: list[int], items: list[dict], batch_size: int) -> dict[int, list[str]]:
        """Greedy answers of trials ``trial_indices`` to ``items``: one batched call per token budget.

        The evaluator gives each item its own budget (``token_budget``) and never more, so items are
        grouped by budget and each group is generated for all trials at once.
        """
        from spelltransfer.evaluate.evaluator import token_budget
        from spelltransfer.models import PromptFormat
        from spelltransfer.train.packed.generate import generate_for_trials

        fmt = PromptFormat.from_tokenizer(self.tokenizer)
        by_budget: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            by_budget.setdefault(token_budget(item), []).append(i)
        outputs = {k: [""] * len(items) for k in trial_indices}
        for budget, indices in sorted(by_budget.items()):
            texts = generate_for_trials(self.trainer.model, self.tokenizer, self.trainer.routing, trial_indices,
                                        [fmt.prompt(items[i]["prompt"]) for i in indices], max_new_tokens=budget,
                                        rows_per_call=batch_size * len(trial_indices),
                                        restore_attention=self.trainer.training_attention)
            for k in trial_indices:
                for i, text in zip(indices, texts[k]):
                    outputs[k][i] = text
        return outputs

    # -- finishing, cancelling, saving

    def finish_extras(self, trials: list[int]) -> dict[int, dict]:
        """``validation`` (greedy generation on the validation split as ``platform.eval_job --run-dir``
        scores it, saved as validation_eval.json) and ``pack`` of members ending together."""
        from spelltransfer.data import load_split
        from spelltransfer.evaluate.evaluator import EvalResult, prepare_items

        members = [self.members[k] for k in trials]

        def validation_items(member: _Member):
            # What `platform.eval_job --run-dir` asks (its _from_run_dir): the run's tasks and items per task.
            transfer = member.config.transfer
            return prepare_items(load_split(member.config.training.data_dir, "validation"),
                                 list(transfer.eval_tasks) or None, transfer.eval_items_per_task)

        scored = self._score(members, lambda m: (m.config.training.data_dir, tuple(m.config.transfer.eval_tasks),
                                                 m.config.transfer.eval_items_per_task), validation_items)
        extras = {}
        for member in members:
            training, config = member.config.training, member.config
            predictions, tasks, seconds, n_items = scored[member]
            validation = EvalResult(tasks=tasks, model=str(config.model.name), adapter=str(member.book.folder.final),
                                    data=str(training.data_dir), split="validation", n_items=n_items,
                                    seconds=round(seconds, 3),
                                    items_per_second=round(n_items / seconds, 3) if seconds > 0 else 0.0,
                                    batch_size=training.eval_batch_size, predictions=predictions)
            validation.save(member.book.folder.validation_eval)
            extras[member.index] = {"validation": validation.model_dump(),
                                    "pack": {"pack_id": self.manifest.pack_id,
                                             "members": [m.trial_id for m in self.members]}}
        return extras

    def _cancel_requested(self, member: _Member) -> bool:
        return RunReader(member.output_dir).cancel_requested()

    def _close_cancelled_before_start(self) -> None:
        """Members cancelled while no pack process ran still get their ``done`` line (once)."""
        for member in self.members:
            if member.finished or not self._cancel_requested(member):
                continue
            last = RunReader(member.output_dir).last_event()
            if last is None or last.get("event") != "done":
                with RunWriter(member.output_dir) as writer:
                    writer.emit("done", int(last.get("step", 0)) if last else 0, reason="cancelled")

    def save(self, step, books, due, improved, ending) -> dict[int, str]:
        """The whole pack's state to ``DIR/state.pt``, atomically, every ``save_steps`` (the smallest
        of the members) while a member trains on; ``improved``/``ending`` need no save (the best
        weights are kept in memory and in the state, a finished member has its metrics.json)."""
        import torch

        from spelltransfer.atomic import atomic_path

        save_every = min(m.config.training.save_steps for m in self.members)
        if step % save_every or self.trainer.done():
            return {}
        members = {}
        for member in self.members:
            if member.book is not None:
                members[member.trial_id] = {**member.book.state_dict(), "best_row": member.best_row}
            else:   # finished or cancelled before this process
                members[member.trial_id] = {**self._member_states.get(member.trial_id, {}), "finished": member.finished,
                                            "cancelled": not member.finished}
        state = {"pack_id": self.manifest.pack_id, "step": step, "trainer": self.trainer.state_dict(),
                 "members": members}
        with atomic_path(self.state_path) as temp:
            torch.save(state, temp)
        return {k: str(self.state_path) for k in self.active()}


def run_pack(pack_dir: str | Path, resume: bool = False) -> dict[str, str]:
    """Train one pack folder; returns ``{trial_id: finished|cancelled}``."""
    return PackJob(pack_dir, resume).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spelltransfer.train.packed.job",
                                     description="Train the trials listed in PACK_DIR/pack.json together (packed).")
    parser.add_argument("--pack-dir", required=True, type=Path, help="The pack folder holding pack.json.")
    parser.add_argument("--resume", action="store_true", help="Continue from PACK_DIR/state.pt.")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        outcome = run_pack(args.pack_dir, args.resume)
    except SpellTransferError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log.info("pack %s done: %s", args.pack_dir, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
