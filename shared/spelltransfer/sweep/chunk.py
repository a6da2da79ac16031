"""One chunk of a sweep that advances across machines: ``spelltransfer sweep chunk SPEC --state DIR``.

A study that needs hours of GPU time, got in commands of at most ten minutes on machines that may
be gone before the next one, advances in chunks. Each chunk:

1. **starts from the committed state** ``DIR`` -- ``optuna.db`` (the Optuna storage: every trial's
   params, state, value and attributes; no absolute path is stored in it), ``trials.csv``,
   ``curves/trial-NNNN.csv`` and ``trial_runs.json``. It copies ``optuna.db`` into a work folder
   (``--work-dir``, default ``$TMPDIR/spelltransfer-chunk-<sweep>``) and submits the sweep to a
   fresh local controller (``LocalPlatform``: a controller and trainer workers as processes on
   127.0.0.1) with ``storage`` pointing at that copy and ``max_trials`` set to what is left:
   ``target`` COMPLETE trials (default the spec's ``max_trials``);
2. **or continues warm**: when the work folder of the chunk that wrote ``DIR`` is still there (the
   same machine, still held), its controller and workers restart on their old ports, the
   controller re-attaches to its trials, and the workers resume them from their checkpoints --
   a trial longer than one command then spans several;
3. **trains until the budget**: it watches the sweep and stops the platform ``--margin-s`` before
   ``--budget-s`` (or when ``target`` trials are COMPLETE, the sweep ended, or ``stop_after``
   more trials completed);
4. **writes the state back atomically**, after every finished trial and at the end: the live
   study is copied (SQLite backup) to a staging file, where every trial still in flight is told
   FAIL (``stop_reason: chunk_cut``) and enqueued again with the same params
   (``study.enqueue_trial``: the next chunk asks it first, so a balanced design stays balanced);
   a trial cut more than ``max_cuts`` times is left FAIL ("does not fit a chunk"). The copy then
   replaces ``DIR/optuna.db``. A machine lost mid-chunk so costs at most the trials in flight.

The study's user attribute ``chunk_serial`` counts the chunks; ``DIR/chunks.jsonl`` logs each one.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml
from rich.console import Console

from spelltransfer.atomic import atomic_path, write_json_atomic, write_text_atomic
from spelltransfer.run_folder import flatten_numbers, read_events
from spelltransfer.safe_yaml import load_yaml, read_yaml_text
from spelltransfer.sweep.design import DESIGN_ATTR
from spelltransfer.sweep.spec import MICRO_BATCH_KEY, SweepSpec, load_spec
from spelltransfer.sweep.store import ControllerStore
from spelltransfer.sweep.views import trial_view

STATE_DB = "optuna.db"
TRIALS_CSV = "trials.csv"
CURVES_DIR = "curves"
RUNS_FILE = "trial_runs.json"
CHUNKS_LOG = "chunks.jsonl"
WORK_INFO = "chunk.json"
SERIAL_ATTR = "chunk_serial"
CUT_REASON = "chunk_cut"
CURVE_STEPS = 1000
NO_TRACKING = ["training.tracking.mlflow.enabled=false", "training.tracking.wandb.enabled=false"]

_State = optuna.trial.TrialState
_FINISHED = (_State.COMPLETE, _State.PRUNED, _State.FAIL)
TASKS = ("spelling", "position", "count")


@dataclass
class ChunkResult:
    serial: int
    warm: bool
    target: int
    complete_before: int
    complete_after: int
    trials: int
    cut: list[int] = field(default_factory=list)        # in flight at the end: FAIL, re-enqueued
    given_up: list[int] = field(default_factory=list)   # cut more than max_cuts times: not re-enqueued
    finished: list[int] = field(default_factory=list)   # trials that finished in this chunk
    stop: str = ""                                      # why the chunk ended
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.complete_after >= self.target


def default_work_dir(spec: SweepSpec) -> Path:
    return Path(tempfile.gettempdir()) / f"spelltransfer-chunk-{spec.name}"


def run_chunk(spec_path: str | Path, state_dir: str | Path, budget_s: float, *, work_dir: str | Path | None = None,
              n_workers: int = 1, slots: int = 1, pack_size: int = 1, overrides: list[str] | None = None,
              target: int | None = None, max_cuts: int = 2, margin_s: float = 30.0, stop_after: int | None = None,
              stop_when: Callable[[dict[str, int]], bool] | None = None, no_tracking: bool = False,
              max_trials_factor: float = 3.0,
              poll_s: float = 2.0, console: Console | None = None) -> ChunkResult:
    """Advance the sweep of ``spec_path`` by one chunk of at most ``budget_s`` seconds; see the module doc.

    ``stop_when(counts)``: end the chunk when it returns true for the study's trial counts
    (``total``, ``complete``, ``running``, ``waiting``), polled every ``poll_s``; ``no_tracking``: the
    spec's MLflow, W&B and registry and every trial's trackers off; ``max_trials_factor``:
    no more trials are asked once ``factor x target`` exist (a spec whose trials keep failing).
    """
    from spelltransfer.platform.protos import sweep_pb2
    from spelltransfer.sweep.local import LocalPlatform

    started = time.monotonic()
    deadline = started + budget_s - margin_s
    console = console or Console()
    spec = load_spec(spec_path)
    target = target or spec.max_trials
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir or default_work_dir(spec)).resolve()
    state_serial = _state_serial(state_dir / STATE_DB, spec.name)
    serial = state_serial + 1
    warm = _is_warm(work, spec.name, state_serial, state_dir)
    work_db = work / STATE_DB

    if not warm:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        if (state_dir / STATE_DB).exists():
            _sqlite_copy(state_dir / STATE_DB, work_db)
            _cut_in_flight(work_db, spec.name, state_serial, max_cuts)  # a state written mid-chunk
    counts = _counts(work_db, spec.name)
    result = ChunkResult(serial=serial, warm=warm, target=target, complete_before=counts["complete"],
                         complete_after=counts["complete"], trials=counts["total"])
    needed = target - counts["complete"]
    cap = int(max_trials_factor * target)
    if needed <= 0 or counts["total"] >= cap:
        result.stop = "target reached" if needed <= 0 else f"{counts['total']} trials asked (cap {cap}): too many failed"
        _write_state(work, state_dir, spec, serial, max_cuts, result)
        return _log_chunk(state_dir, result, started, budget_s, console)

    text = None
    if not warm:
        data = load_yaml(read_yaml_text(Path(spec_path)), str(spec_path))
        data["storage"] = f"sqlite:///{work_db}"
        data["max_trials"] = counts["total"] + max(0, needed - counts["waiting"])
        data["results_dir"] = str(work / "results")
        data["overrides"] = [*(data.get("overrides") or []), *(overrides or []),
                             f"training.plot_dir={work / 'plots'}"]
        if no_tracking:
            for section in ("mlflow", "wandb", "registry"):
                data[section] = dict(data.get(section) or {}, enabled=False)
            data["overrides"] += NO_TRACKING
        text = yaml.safe_dump(data, sort_keys=False)

    platform = LocalPlatform(work / "platform", n_workers=n_workers, slots=slots, pack_size=pack_size)
    if warm:
        platform.ports.update(json.loads((work / WORK_INFO).read_text())["ports"])
    finished_before = _snapshot(work_db, spec.name)[1]
    try:
        try:
            platform.start()
        except (RuntimeError, TimeoutError) as error:
            if not warm:
                raise
            # The old ports are taken (or the old state does not start): start cold from the state folder.
            platform.stop()
            console.print(f"warm restart failed ({error}); starting cold from {state_dir}")
            (work / WORK_INFO).unlink(missing_ok=True)
            return run_chunk(spec_path, state_dir, budget_s - (time.monotonic() - started), work_dir=work,
                             n_workers=n_workers, slots=slots, pack_size=pack_size, overrides=overrides, target=target,
                             max_cuts=max_cuts, margin_s=margin_s, stop_after=stop_after, stop_when=stop_when,
                             no_tracking=no_tracking, max_trials_factor=max_trials_factor, poll_s=poll_s,
                             console=console)
        write_json_atomic(work / WORK_INFO, {"serial": serial, "ports": platform.ports, "state_dir": str(state_dir),
                                             "sweep": spec.name}, fsync=False)
        client = platform.client()
        if text is not None:
            client.submit_text(text, str(spec_path))
        console.print(f"chunk {serial} of [bold]{spec.name}[/] ({'warm: re-attached' if warm else 'cold'}): "
                      f"{counts['complete']}/{target} COMPLETE, {budget_s:.0f}s budget; work in {work}")
        written = set(finished_before)
        while True:
            sweep = client.get(spec.name)
            now_counts, done_now = _snapshot(work_db, spec.name)
            if done_now - written:
                result.finished = sorted(done_now - finished_before)
                written = done_now
                _write_state(work, state_dir, spec, serial, max_cuts, result)  # after every finished trial
                console.print(f"[dim]{time.monotonic() - started:5.0f}s[/] finished: "
                              f"{', '.join(f'#{n}' for n in sorted(result.finished))}", highlight=False)
            complete = now_counts["complete"]
            if sweep.state != sweep_pb2.SWEEP_RUNNING:
                result.stop = f"sweep {sweep_pb2.SweepState.Name(sweep.state).removeprefix('SWEEP_')}"
                break
            if complete >= target:
                result.stop = "target reached"
                break
            if stop_after is not None and complete - result.complete_before >= stop_after:
                result.stop = f"{stop_after} trial(s) completed"
                break
            if stop_when is not None and stop_when(now_counts):
                result.stop = "stop_when"
                break
            if time.monotonic() >= deadline:
                result.stop = "budget"
                break
            time.sleep(poll_s)
        client.close()
    finally:
        platform.stop()
    result.finished = sorted(_snapshot(work_db, spec.name)[1] - finished_before)
    _write_state(work, state_dir, spec, serial, max_cuts, result)
    return _log_chunk(state_dir, result, started, budget_s, console)


# ---------------------------------------------------------------- the state folder

def _write_state(work: Path, state_dir: Path, spec: SweepSpec, serial: int, max_cuts: int, result: ChunkResult) -> None:
    """The live study, with the trials in flight cut and re-enqueued, plus trials.csv and curves, into ``state_dir``."""
    work_db = work / STATE_DB
    if not work_db.exists():
        return
    runs = _read_json(state_dir / RUNS_FILE) or {}
    with tempfile.TemporaryDirectory(dir=state_dir, prefix=".staging-") as staging:
        staged = Path(staging) / STATE_DB
        _sqlite_copy(work_db, staged)
        cut, given_up = _cut_in_flight(staged, spec.name, serial, max_cuts)
        result.cut, result.given_up = cut, given_up
        trials = _with_study(staged, spec.name, lambda study, _: (study.set_user_attr(SERIAL_ATTR, serial),
                                                                  study.get_trials(deepcopy=True))[1])
        curves = state_dir / CURVES_DIR
        curves.mkdir(exist_ok=True)
        for trial in trials:
            key = str(trial.number)
            run_id = trial.user_attrs.get("worker_trial_id")
            if trial.state not in _FINISHED or key in runs or not run_id:
                continue
            events = _run_events(work, str(run_id))
            if events is None:
                continue
            runs[key] = _run_summary(events) | {"worker_trial_id": run_id,
                                                "curve": f"{CURVES_DIR}/trial-{trial.number:04d}.csv"}
            write_text_atomic(state_dir / runs[key]["curve"], _curve_csv(events), fsync=False)
        write_json_atomic(state_dir / RUNS_FILE, runs, indent=1, sort_keys=True)
        with atomic_path(state_dir / STATE_DB) as target:
            shutil.copyfile(staged, target)
    write_text_atomic(state_dir / TRIALS_CSV, trials_csv(trials, runs), fsync=False)
    counts = _count(trials)
    result.complete_after, result.trials = counts["complete"], counts["total"]


def trials_csv(trials: list[optuna.trial.FrozenTrial], runs: dict[str, dict]) -> str:
    """Every trial: its settings, per-task accuracies with n, objective, steps, stop reason, tokens, time."""
    param_names = sorted({name for trial in trials for name in trial_params(trial)})
    columns = ["number", "state", "design_index", "requeued_from", "chunk_cuts", *param_names]
    if MICRO_BATCH_KEY in param_names:
        columns.append("training.batch_size")  # the effective batch: micro batch x grad_accum
    for task in TASKS:
        columns += [f"{task}_accuracy", f"{task}_n"]
    columns += ["objective", "steps", "max_steps", "capped", "stop_reason", "tokens", "train_s", "duration_s", "attempts",
                "worker_trial_id", "curve", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for trial in trials:
        view = trial_view(trial, [])
        attrs = trial.user_attrs
        run = runs.get(str(trial.number), {})
        params = trial_params(trial)
        row: dict[str, Any] = dict(params)
        if MICRO_BATCH_KEY in params:
            row["training.batch_size"] = int(params[MICRO_BATCH_KEY]) * int(params.get("training.grad_accum", 1))
        row |= {"number": trial.number, "state": trial.state.name, "design_index": attrs.get(DESIGN_ATTR, ""),
                "requeued_from": attrs.get("requeued_from", ""), "chunk_cuts": attrs.get("chunk_cuts", ""),
                "objective": "" if view.objective is None else f"{view.objective:.6g}",
                "steps": view.steps if trial.state in _FINISHED and "steps" in attrs else "",
                "max_steps": run.get("max_steps", ""), "capped": _capped(params, run), "stop_reason": view.stop_reason,
                "tokens": run.get("tokens", ""), "train_s": run.get("train_s", ""),
                "duration_s": f"{view.duration_s:.1f}" if trial.datetime_start else "",
                "attempts": attrs.get("attempts", ""), "worker_trial_id": attrs.get("worker_trial_id", ""),
                "curve": run.get("curve", ""), "error": view.error}
        for task in TASKS:
            value, n = view.metrics.get(f"{task}_accuracy"), view.metrics.get(f"{task}_n")
            row[f"{task}_accuracy"] = "" if value is None else f"{value:.6g}"
            row[f"{task}_n"] = "" if n is None else int(n)
        writer.writerow(row)
    return buffer.getvalue()


def _capped(params: dict[str, Any], run: dict) -> str:
    """"yes" when the run trained fewer max_steps than its params asked (the spec's max_micro_steps)."""
    asked, trained = params.get("training.max_steps"), run.get("max_steps")
    if asked in (None, "") or trained in (None, ""):
        return ""
    return "yes" if int(trained) < int(asked) else "no"


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The trial's params; for a WAITING (enqueued, not yet asked) trial, the ones it will be given."""
    if trial.state == _State.WAITING and not trial.params:
        return dict(trial.system_attrs.get("fixed_params") or {})
    return dict(trial.params)


def _cut_in_flight(db: Path, study_name: str, serial: int, max_cuts: int) -> tuple[list[int], list[int]]:
    """Tell every RUNNING trial FAIL (``chunk_cut``) and enqueue its params again; (cut, given up)."""
    if not db.exists():
        return [], []

    def cut(study: optuna.Study, storage: optuna.storages.RDBStorage) -> tuple[list[int], list[int]]:
        study_id = storage.get_study_id_from_name(study_name)
        requeued, given_up = [], []
        for trial in study.get_trials(deepcopy=False, states=(_State.RUNNING,)):
            cuts = int(trial.user_attrs.get("chunk_cuts", 0)) + 1
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            rerun = cuts <= max_cuts
            reason = CUT_REASON if rerun else f"does not fit a chunk (cut {cuts} times)"
            for key, value in {"stop_reason": reason, "cut_in_chunk": serial, "chunk_cuts": cuts}.items():
                storage.set_trial_user_attr(trial_id, key, value)
            study.tell(trial.number, state=_State.FAIL, skip_if_finished=True)
            if rerun:
                attrs = {"requeued_from": trial.number, "chunk_cuts": cuts}
                if DESIGN_ATTR in trial.user_attrs:
                    attrs[DESIGN_ATTR] = trial.user_attrs[DESIGN_ATTR]
                study.enqueue_trial(dict(trial.params), user_attrs=attrs)
                requeued.append(trial.number)
            else:
                given_up.append(trial.number)
        return requeued, given_up

    return _with_study(db, study_name, cut, default=([], []))


def _with_study(db: Path, study_name: str, action, default=None):
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}", engine_kwargs={"connect_args": {"timeout": 60}})
    try:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            return default
        return action(study, storage)
    finally:
        storage.engine.dispose()  # release the file before it is copied or moved


def _counts(db: Path, study_name: str) -> dict[str, int]:
    return _snapshot(db, study_name)[0]


def _snapshot(db: Path, study_name: str) -> tuple[dict[str, int], set[int]]:
    """The trial counts and the numbers of the finished trials, in one read of the storage."""
    def read(study: optuna.Study, _) -> tuple[dict[str, int], set[int]]:
        trials = study.get_trials(deepcopy=False)
        return _count(trials), {t.number for t in trials if t.state in _FINISHED}

    if not db.exists():
        return _count([]), set()
    return _with_study(db, study_name, read, default=(_count([]), set()))


def _count(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    return {"total": len(trials), "complete": sum(t.state == _State.COMPLETE for t in trials),
            "running": sum(t.state == _State.RUNNING for t in trials),
            "waiting": sum(t.state == _State.WAITING for t in trials)}


def _state_serial(db: Path, study_name: str) -> int:
    if not db.exists():
        return 0
    return int(_with_study(db, study_name, lambda study, _: study.user_attrs.get(SERIAL_ATTR, 0), default=0))


def _is_warm(work: Path, sweep: str, state_serial: int, state_dir: Path) -> bool:
    """The work folder of the chunk that wrote the state is here, its sweep still running."""
    info = _read_json(work / WORK_INFO)
    if not info or state_serial == 0 or info.get("serial") != state_serial or info.get("sweep") != sweep:
        return False
    if info.get("state_dir") != str(state_dir) or not (work / STATE_DB).exists():
        return False
    controller_db = work / "platform" / "controller" / "controller.db"
    if not controller_db.exists():
        return False
    row = ControllerStore(controller_db).sweep(sweep)
    return row is not None and row.state == "RUNNING"


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the backup API, not a file copy)."""
    target.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


# ---------------------------------------------------------------- a trial's run folder

def _run_events(work: Path, worker_trial_id: str) -> list[dict] | None:
    for path in sorted((work / "platform").glob(f"worker*/runs/{worker_trial_id}/events.jsonl")):
        return read_events(path)
    return None


def _run_summary(events: list[dict]) -> dict:
    steps = [e for e in events if e.get("event") == "step"]
    starts = [e for e in events if e.get("event") == "start"]
    done = [e for e in events if e.get("event") == "done"]
    summary: dict[str, Any] = {"tokens": int(max((e.get("tokens") or 0 for e in steps), default=0))}
    if starts:
        summary["max_steps"] = starts[0].get("max_steps", "")
    if starts and (done or steps):
        summary["train_s"] = round(float((done or steps)[-1]["time"]) - float(starts[0]["time"]), 1)
    return summary


def _curve_csv(events: list[dict]) -> str:
    """The training curve: every eval event (its metrics) and up to ``CURVE_STEPS`` step events (loss,
    lr, tokens; every k-th, and the last, of a longer run), so 64 trials' curves stay a few MB."""
    rows = []
    steps = [e for e in events if e.get("event") == "step"]
    stride = max(1, -(-len(steps) // CURVE_STEPS))
    keep = {id(e) for e in steps[::stride]} | ({id(steps[-1])} if steps else set())
    for event in events:
        if event.get("event") == "step" and id(event) in keep:
            rows.append({"step": event.get("step"), "event": "step", "time": event.get("time"), "loss": event.get("loss"),
                         "lr": event.get("lr"), "tokens": event.get("tokens")})
        elif event.get("event") == "eval":
            rows.append({"step": event.get("step"), "event": "eval", "time": event.get("time")}
                        | flatten_numbers(event.get("metrics") or {}))
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["step", "event", "time"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _log_chunk(state_dir: Path, result: ChunkResult, started: float, budget_s: float, console: Console) -> ChunkResult:
    result.seconds = round(time.monotonic() - started, 1)
    line = json.dumps(asdict(result) | {"budget_s": budget_s, "ended_at": time.time()}, sort_keys=True)
    log = state_dir / CHUNKS_LOG
    previous = log.read_text() if log.exists() else ""
    write_text_atomic(log, previous + line + "\n", fsync=False)
    console.print(f"chunk {result.serial} ({'warm' if result.warm else 'cold'}) ended after {result.seconds:.0f}s "
                  f"({result.stop}): {result.complete_after}/{result.target} COMPLETE, {result.trials} trials; "
                  f"finished {result.finished or '-'}; cut and re-enqueued {result.cut or '-'}"
                  f"{'; given up ' + str(result.given_up) if result.given_up else ''}; state in {state_dir}",
                  highlight=False)
    return result
