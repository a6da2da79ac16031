"""The run-folder contract: what ``RunWriter`` writes, ``RunReader`` reads back; no torch needed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spelltransfer import run_folder
from spelltransfer.run_folder import METRICS_KEYS, RunFolder, RunReader, RunWriter, metrics_summary, request_cancel


def _summary(folder: RunFolder, **extra) -> dict:
    history = [{"step": 2, "eval_loss": 1.5, "accuracy": 0.25}, {"step": 4, "eval_loss": 1.2, "accuracy": 0.5}]
    return metrics_summary(history=history, stop_step=4, stop_reason="max_steps", best_step=2, metric_name="accuracy",
                           adapter_dir=folder.final, backend="hf", device="cpu", base_model="tiny",
                           last_train_loss=0.75, tokens_seen=128, train_seconds=1.234, resumed_from=None,
                           plot_path=None, **extra)


def test_a_run_written_by_the_writer_reads_back(tmp_path):
    seen = []
    writer = RunWriter(tmp_path / "run", on_event=seen.append, flush_only=("step",))
    writer.write_config("training:\n  seed: 1\n")
    writer.emit("start", 0, backend="hf", device="cpu", max_steps=4, resumed_from=None)
    for step in (1, 2, 3, 4):
        writer.emit("step", step, loss=1.0 / step, lr=1e-3, tokens=32 * step)
    writer.emit("eval", 4, metrics={"eval_loss": 1.2, "accuracy_spelling": 0.5})
    (writer.folder.checkpoints / "step-4").mkdir(parents=True)
    writer.emit("checkpoint", 4, path=str(writer.folder.checkpoints / "step-4"))
    reader = RunReader(tmp_path / "run")
    assert reader.metrics() is None and not reader.finished()
    writer.emit("done", 4, reason="max_steps", best_step=2, adapter=str(writer.folder.final))
    path = writer.write_metrics(_summary(writer.folder, pack={"pack_id": "p"}), fsync=False)
    writer.close()

    assert path == RunFolder(tmp_path / "run").metrics == tmp_path / "run" / "metrics.json"
    assert reader.folder.config.read_text() == "training:\n  seed: 1\n"
    events = reader.events()
    assert [e["event"] for e in events] == ["start", "step", "step", "step", "step", "eval", "checkpoint", "done"]
    assert events == seen and all(isinstance(e["time"], float) for e in events)
    assert reader.last_step() == 4 and reader.last_event()["reason"] == "max_steps"
    assert reader.has_checkpoints() and reader.finished()
    metrics = reader.metrics()
    assert tuple(metrics) == METRICS_KEYS and metrics["validation"] is None
    assert metrics["stop"] == {"step": 4, "reason": "max_steps"}
    assert metrics["final"] == {"step": 4, "eval_loss": 1.2, "accuracy": 0.5}
    assert metrics["best"] == {"step": 2, "metric": "accuracy", "eval_loss": 1.5, "accuracy": 0.25}
    assert metrics["adapter"] == {"path": str(tmp_path / "run" / "final"), "from_step": 2}
    assert metrics["train_seconds_this_session"] == 1.23 and metrics["plot"] is None


def test_a_follower_sees_complete_lines_only(tmp_path):
    writer = RunWriter(tmp_path)
    writer.emit("step", 1, loss=1.0, lr=0.1, tokens=8)
    reader = RunReader(tmp_path)
    events, offset = reader.new_events(0)
    assert [e["step"] for e in events] == [1]
    with open(reader.folder.events, "a") as handle:   # a writer killed mid-line
        handle.write('{"event": "step", "st')
    assert reader.new_events(offset) == ([], offset)
    assert [e["event"] for e in reader.events()] == ["step"]
    with open(reader.folder.events, "a") as handle:
        handle.write('ep": 2}\nnot json\n')
    events, _ = reader.new_events(offset)
    assert events[0]["step"] == 2 and events[1]["event"] == "unparsed"
    assert reader.last_step() == 2
    writer.close()


def test_without_a_run_the_reader_answers_empty(tmp_path):
    reader = RunReader(tmp_path / "absent")
    assert reader.events() == [] and reader.new_events(5) == ([], 5) and reader.last_step() == 0
    assert reader.metrics() is None and reader.validation_eval() is None and reader.tracking_run_ids() == {}
    assert not reader.cancel_requested() and not reader.has_checkpoints() and not reader.finished()


def test_cancel_and_tracking_ids(tmp_path):
    request_cancel(tmp_path / "run")
    reader = RunReader(tmp_path / "run")
    assert reader.cancel_requested() and reader.folder.cancel.name == "CANCEL"
    reader.folder.tracking.write_text(json.dumps({"mlflow": "abc", "wandb": "", "other": 3}))
    assert reader.tracking_run_ids() == {"mlflow": "abc"}


def test_the_writer_refuses_events_outside_the_schema(tmp_path):
    writer = RunWriter(tmp_path)
    with pytest.raises(ValueError, match="unknown event type 'stepped'"):
        writer.emit("stepped", 1)
    with pytest.raises(ValueError, match="step event: missing lr, tokens"):
        writer.emit("step", 1, loss=1.0)
    writer.close()
    assert RunReader(tmp_path).events() == []


def test_tasks_are_the_evaluators():
    from spelltransfer.evaluate.answers import TASKS

    assert run_folder.TASKS == TASKS


def test_importing_the_contract_imports_no_torch():
    code = ("import sys, spelltransfer.run_folder; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('spelltransfer.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
