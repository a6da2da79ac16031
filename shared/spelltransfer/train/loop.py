"""The one training loop: K trials' bookkeeping, whichever engine trains them (issue 12 item 2).

``TrainingLoop(engine, books).run()`` drives an ``Engine`` -- the hf/unsloth single trainer
(``train/trainer.py``, K = 1) or the packed multi-trial trainer (``train/packed/job.py``, K
trials on one base model) -- and keeps one ``TrialBookkeeper`` per trial. What a run writes
and decides is written here once:

* ``events.jsonl`` through ``run_folder.RunWriter``: ``start``, ``step`` every ``logging_steps``
  (and at ``max_steps``), ``eval`` every ``eval_steps`` (and at ``max_steps``), ``checkpoint``,
  ``done`` (or ``error``);
* early stopping (``train/early_stopping.py``) on the eval metric, the trial ending at
  ``max_steps`` or when patience runs out, the best step's weights kept (``Engine.keep_best``)
  and restored into ``final/`` (``Engine.export``);
* when a checkpoint is due (``TrialBookkeeper.save_due``; the engine decides what a checkpoint
  is and may save more often, ``Engine.save``) and what a trial's state holds for a resume
  (``TrialBookkeeper.state_dict``);
* tracking (``spelltransfer.track``: MLflow/W&B), the ``metrics.json`` summary
  (``run_folder.metrics_summary``) and the metric-by-step plot (``train/plot.py``).

An engine computes; it never writes a run folder. Validation scores come from the engine
(``Engine.validate``) but are scored the same way by all: teacher-forced ``eval_loss`` over the
sample's answer tokens and, for accuracy, greedy answers scored by the evaluator's
``score_outputs``/``accuracy_metrics`` (``spelltransfer.evaluate.evaluator``).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Protocol

from spelltransfer import run_folder
from spelltransfer.errors import ConfigError, short_repr
from spelltransfer.run_folder import RunFolder, RunWriter
from spelltransfer.safe_yaml import load_yaml_file
from spelltransfer.train.checkpoints import list_checkpoints
from spelltransfer.train.config import RunConfig, validate_config
from spelltransfer.train.early_stopping import EarlyStopping

# Fields that may differ between a run and its resumption: where things are logged, not what is trained.
RESUMABLE_DIFFERENCES = ("training.tracking", "training.run_name", "training.output_root", "training.plot_dir")


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        name = f"{prefix}.{key}" if prefix else key
        if name.startswith(RESUMABLE_DIFFERENCES):
            continue
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            out.extend(_differences(left, right, name))
        elif left != right:
            out.append(f"{name} ({short_repr(left)} -> {short_repr(right)})")
    return out


def open_run_folder(config: RunConfig, output_dir: Path, resume: bool, on_event: Callable[[dict], None] | None = None,
                    flush_only: tuple[str, ...] = ()) -> RunWriter:
    """Check ``output_dir`` may take this run (a resume must not change what is trained), save the
    resolved config there and return the folder's writer."""
    folder = RunFolder(output_dir)
    has_checkpoints = bool(list_checkpoints(folder.checkpoints))
    if has_checkpoints and not resume:
        raise ConfigError(f"{output_dir} already holds checkpoints; pass --resume to continue it or choose another --output-dir")
    if resume and folder.config.is_file():
        previous = validate_config(load_yaml_file(folder.config) or {}, source=str(folder.config))
        changed = _differences(previous.model_dump(mode="json"), config.model_dump(mode="json"))
        if changed:
            raise ConfigError(f"--resume with a config that differs from {folder.config}: {', '.join(changed)}")
    writer = RunWriter(output_dir, on_event, flush_only)
    writer.write_config(config.to_yaml())
    return writer



class Engine(Protocol):
    """What the loop needs from whatever trains the trials (indices 0..K-1)."""

    backend: str                 # metrics.json ``backend`` and the start event's
    device: str
    base_model: str              # resolved base-model path (metrics.json ``base_model``)
    step_index: int              # optimizer steps taken (the pack's, for K trials)

    def active(self) -> list[int]:
        """Trials that take the next step (not at max_steps, not stopped)."""

    def step(self) -> dict[int, int]:
        """One optimizer step of every active trial; the tokens each of them consumed."""

    def losses(self, trials: list[int]) -> dict[int, float]:
        """The training loss of each trial's last step (may sync with the device)."""

    def lr(self, trial: int, step: int) -> float:
        """The learning rate trial ``trial`` used at (1-based) ``step``."""

    def validate(self, trials: dict[int, bool]) -> dict[int, dict]:
        """Validation metrics of each trial on its own sample: ``eval_loss`` and, where
        ``trials[k]`` (its early stopping scores accuracy), ``accuracy`` and ``accuracy_<task>``."""

    def keep_best(self, trial: int, step: int) -> None:
        """The trial's current weights are its best so far (early stopping improved at ``step``)."""

    def stop(self, trial: int) -> None:
        """The trial ends now (early stopping, cancel, max_steps): it takes no more steps."""

    def save(self, step: int, books: dict[int, "TrialBookkeeper"], due: list[int], improved: list[int],
             ending: list[int]) -> dict[int, str]:
        """Checkpoint after ``step`` if the engine's policy says so (``due``: trials whose
        ``save_steps`` came; ``improved``/``ending``: trials whose best step is this one or that end
        here); ``books[k].state_dict()`` is what a resume needs of trial k. Returns ``{trial: path}``
        of the trials the checkpoint holds (a ``checkpoint`` event each), empty when none was written."""

    def export(self, trial: int, out_dir: Path, best_step: int | None, stop_step: int) -> None:
        """Write the trial's adapter (the best step's weights when ``best_step`` is set) into
        ``out_dir`` (a staging folder, renamed into place by the loop) with the tokenizer files."""

    def last_loss(self, trial: int) -> float | None:
        """The trial's last training loss (metrics.json ``last_train_loss``)."""

    def finish_extras(self, trials: list[int]) -> dict[int, dict]:
        """Extra metrics.json sections of trials that have just been exported (``validation``,
        ``pack``); ``{}`` for none."""


class TrialBookkeeper:
    """One trial's run folder, tracker and early stopping; the engine-independent half of a run.

    ``writer``: the trial's open ``RunWriter``; ``tracker``: its ``build_tracker`` result (None =
    build it in ``start``).
    """

    def __init__(self, config, writer: RunWriter, *, output_dir: Path, tracker=None, metrics_fsync: bool = True):
        training = config.training
        self.config, self.writer, self.output_dir = config, writer, Path(output_dir)
        self.es = training.early_stopping
        self.stopper = EarlyStopping.from_config(self.es)
        self.tracker = tracker
        self.metrics_fsync = metrics_fsync
        self.run_name = training.run_name or self.output_dir.name
        self.max_steps = training.max_steps
        self.history: list[dict] = []
        self.tokens_seen = 0
        self.finished = False
        self.cancelled = False
        self.stop_step: int | None = None   # set when the trial ends (a resume finishing it reads it)

    @property
    def folder(self):
        return self.writer.folder

    @property
    def ended(self) -> bool:
        return self.finished or self.cancelled

    # -- cadence and early stopping

    def log_due(self, step: int) -> bool:
        return step % self.config.training.logging_steps == 0 or step == self.max_steps

    def eval_due(self, step: int) -> bool:
        return step % self.config.training.eval_steps == 0 or step == self.max_steps

    def save_due(self, step: int) -> bool:
        return step % self.config.training.save_steps == 0

    @property
    def should_stop(self) -> bool:
        return self.es.enabled and self.stopper.should_stop

    @property
    def best_step(self) -> int | None:
        return self.stopper.best_step if self.es.enabled else None

    @property
    def metric_name(self) -> str:
        return self.es.metric if self.es.enabled else "eval_loss"

    @property
    def wants_accuracy(self) -> bool:
        return self.es.metric == "accuracy"

    def ends_at(self, step: int) -> bool:
        return step >= self.max_steps or self.should_stop

    # -- events

    def start(self, step: int, resumed_from: int | None, tags: dict, **fields) -> None:
        if self.tracker is None:
            from spelltransfer.track import build_tracker

            training = self.config.training
            self.tracker = build_tracker(training.tracking, training.experiment, self.output_dir)
        self.tracker.start(self.run_name, self.config.flat(), tags)
        self.writer.emit("start", step, **fields, resumed_from=resumed_from, output_dir=str(self.output_dir))

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.writer.emit("step", step, loss=loss, lr=lr, tokens=self.tokens_seen)
        self.tracker.log_metrics({"train/loss": loss, "train/lr": lr, "train/tokens": self.tokens_seen}, step)

    def record_eval(self, step: int, metrics: dict, final: bool = False) -> bool:
        """One evaluation; True when early stopping counts it as a new best. ``final``: the
        evaluation of a trial resumed after its last one -- logged, neither tracked nor counted."""
        self.history.append({"step": step, **metrics})
        self.writer.emit("eval", step, metrics=metrics)
        if final:
            return False
        self.tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step)
        return self.es.enabled and self.stopper.update(step, metrics[self.es.metric])

    def checkpointed(self, step: int, path: str) -> None:
        self.writer.emit("checkpoint", step, path=path)

    def finish(self, step: int, *, adapter_dir: Path, backend: str, device: str, base_model: str,
               last_train_loss: float | None, train_seconds: float, resumed_from: int | None,
               validation: dict | None = None, pack: dict | None = None) -> tuple[dict, Path, Path | None]:
        """Plot, ``done``, metrics.json (last: a follower takes it as 'finished'), tracker close.
        Returns (summary, metrics path, plot path)."""
        from spelltransfer.train.plot import plot_run

        reason = "early_stopping" if self.should_stop else "max_steps"
        best_step = self.best_step
        plot_path = plot_run(self.config, self.history, self.metric_name, self.output_dir, self.run_name,
                             best_step, step, reason)
        summary = run_folder.metrics_summary(
            history=self.history, stop_step=step, stop_reason=reason, best_step=best_step,
            metric_name=self.metric_name, adapter_dir=adapter_dir, backend=backend, device=device,
            base_model=base_model, last_train_loss=last_train_loss, tokens_seen=self.tokens_seen,
            train_seconds=train_seconds, resumed_from=resumed_from, plot_path=plot_path, validation=validation,
            pack=pack)
        self.writer.emit("done", step, reason=reason, best_step=best_step, adapter=str(adapter_dir))
        metrics_path = self.writer.write_metrics(summary, fsync=self.metrics_fsync)
        self.finished = True
        tracker = self.tracker
        extra = {}
        if validation is not None:
            extra = {f"validation/{task}_accuracy": t["accuracy"] for task, t in validation["tasks"].items()}
        best = run_folder.best_metrics(self.history, best_step)
        tracker.log_metrics({f"best/{k}": v for k, v in best.items()} | extra | {"stop_step": step}, step)
        tracker.log_artifact(metrics_path)
        tracker.log_artifact(self.folder.config)
        if plot_path:
            tracker.log_artifact(plot_path)
        if self.config.training.tracking.mlflow.log_adapter:
            tracker.log_artifact(adapter_dir, "adapter")
        tracker.finish("FINISHED")
        return summary, metrics_path, plot_path

    def cancel(self, step: int) -> None:
        self.cancelled = True
        self.writer.emit("done", step, reason="cancelled")
        if self.tracker is not None:
            self.tracker.finish("KILLED")

    def fail(self, error: BaseException) -> None:
        """An ``error`` line and the tracker closed as failed (killed on Ctrl-C); never raises."""
        if self.ended:
            return
        with contextlib.suppress(Exception):
            self.writer.emit("error", -1, message=f"{type(error).__name__}: {error}")
        if self.tracker is not None:
            with contextlib.suppress(Exception):
                self.tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    # -- resume

    def state_dict(self) -> dict:
        return {"early_stopping": self.stopper.state_dict(), "history": self.history, "tokens_seen": self.tokens_seen,
                "finished": self.finished, "cancelled": self.cancelled, "stop_step": self.stop_step}

    def load_state_dict(self, state: dict) -> None:
        self.stopper.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        self.tokens_seen = int(state["tokens_seen"])
        self.finished = self.finished or bool(state.get("finished", False))
        self.cancelled = self.cancelled or bool(state.get("cancelled", False))
        self.stop_step = state.get("stop_step")


class TrainingLoop:
    """Train ``books`` (trial index -> bookkeeper; ended ones are skipped) with ``engine`` until
    every trial has ended; see the module docstring.

    ``cancel_requested(k)``: checked before every step, a True drops trial k (``done`` with reason
    ``cancelled``, no metrics.json); None = trials are not cancelled this way.
    """

    def __init__(self, engine: Engine, books: dict[int, TrialBookkeeper], *, resumed_from: int | None = None,
                 cancel_requested=None):
        self.engine, self.books, self.resumed_from = engine, books, resumed_from
        self.cancel_requested = cancel_requested
        self.results: dict[int, tuple[dict, Path, Path | None]] = {}
        self._started = time.perf_counter()

    def run(self) -> dict[int, tuple[dict, Path, Path | None]]:
        """Returns ``{trial: (summary, metrics path, plot path)}`` of the trials finished here."""
        engine, books = self.engine, self.books
        for k, book in books.items():
            if book.ended or book.should_stop or book.stop_step is not None:
                engine.stop(k)
        self._started = time.perf_counter()   # train_seconds_this_session counts the loop
        while True:
            self._drop_cancelled()
            running = [k for k in engine.active() if k in books and not books[k].ended]
            if not running:
                break
            tokens = engine.step()
            step = engine.step_index
            for k in running:
                books[k].tokens_seen += tokens.get(k, 0)
            logging = [k for k in running if books[k].log_due(step)]
            if logging:
                losses = engine.losses(logging)
                for k in logging:
                    books[k].log_step(step, losses[k], engine.lr(k, step))
            improved = []
            evaluating = [k for k in running if books[k].eval_due(step)]
            scores = engine.validate({k: books[k].wants_accuracy for k in evaluating}) if evaluating else {}
            for k, metrics in scores.items():
                if books[k].record_eval(step, metrics):
                    engine.keep_best(k, step)
                    improved.append(k)
            ending = [k for k in running if books[k].ends_at(step)]
            for k in ending:
                books[k].stop_step = step
                engine.stop(k)
            due = [k for k in running if books[k].save_due(step)]
            for k, path in engine.save(step, books, due, improved, ending).items():
                books[k].checkpointed(step, path)
            if ending:
                self._finish(ending)
        # Trials that ended in an earlier session but were never finished (resumed after their
        # last step, or killed while finishing).
        active = set(engine.active())
        left = [k for k, b in books.items() if not b.ended and k not in active]
        if left:
            self._finish(left)
        return self.results

    def _finish(self, trials: list[int]) -> None:
        from spelltransfer.atomic import staged_dir

        engine = self.engine
        seconds = time.perf_counter() - self._started
        for k in trials:
            book = self.books[k]
            step = book.stop_step if book.stop_step is not None else engine.step_index
            book.stop_step = step
            if not book.history or book.history[-1]["step"] != step:   # e.g. resumed after the last eval
                book.record_eval(step, engine.validate({k: book.wants_accuracy})[k], final=True)
            with staged_dir(book.folder.final) as staging:
                engine.export(k, staging, book.best_step, step)
        extras = engine.finish_extras(trials)
        for k in trials:
            book = self.books[k]
            self.results[k] = book.finish(
                book.stop_step, adapter_dir=book.folder.final, backend=engine.backend, device=engine.device,
                base_model=engine.base_model, last_train_loss=engine.last_loss(k), train_seconds=seconds,
                resumed_from=self.resumed_from, **extras.get(k, {}))

    def _drop_cancelled(self) -> None:
        if self.cancel_requested is None:
            return
        active = set(self.engine.active())
        for k, book in self.books.items():
            if book.ended or k not in active or not self.cancel_requested(k):
                continue
            self.engine.stop(k)
            book.cancel(self.engine.step_index)

    def fail(self, error: BaseException) -> None:
        for book in self.books.values():
            book.fail(error)
