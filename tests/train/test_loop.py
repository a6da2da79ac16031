"""The one training loop (``train/loop.py``): bookkeeping is the same whichever engine trains.

A fake engine (no model) replays a fixed validation curve, so only the bookkeeping is under test:
a trial run alone (K = 1, as ``spelltransfer train``) and the same trial beside two others (K = 3,
as a pack job) write the same events (types, steps and fields), the same metrics.json keys, and
early-stop at the same step with the same best step; the checkpoint cadence and the resume of a
trial that ended in an earlier session are the loop's too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spelltransfer.run_folder import METRICS_KEYS, RunFolder, read_events
from spelltransfer.train.config import RunConfig
from spelltransfer.train.loop import TrainingLoop, TrialBookkeeper, open_run_folder

# eval_loss at steps 1, 2, 3, ...: best at 3, then no improvement beyond min_delta -> patience 2 stops at 5.
CURVE = [5.0, 4.0, 3.0, 2.995, 3.5, 1.0, 1.0, 1.0]


class FakeEngine:
    """K trials; trial k's eval_loss at step s is ``curves[k][s - 1]``; the loss is ``10 - step``."""

    backend, device, base_model = "fake", "cpu", "fake-model"

    def __init__(self, max_steps: list[int], curves: list[list[float]], save_every: int | None = None):
        self.max_steps, self.curves, self.save_every = max_steps, curves, save_every
        self.step_index, self.stopped, self.kept, self.saves = 0, set(), {}, []

    def active(self):
        return [k for k, m in enumerate(self.max_steps) if self.step_index < m and k not in self.stopped]

    def step(self):
        running = self.active()
        self.step_index += 1
        return {k: 10 * (k + 1) for k in running}

    def losses(self, trials):
        return {k: 10.0 - self.step_index for k in trials}

    def lr(self, trial, step):
        return 1e-3 * step

    def validate(self, trials):
        return {k: {"eval_loss": self.curves[k][self.step_index - 1]} for k in trials}

    def keep_best(self, trial, step):
        self.kept[trial] = step

    def stop(self, trial):
        self.stopped.add(trial)

    def save(self, step, books, due, improved, ending):
        if self.save_every is None:   # the single trainer's policy
            if not (due or improved or ending):
                return {}
            self.saves.append((step, {k: books[k].state_dict() for k in books}))
            return {k: f"ckpt-{step}" for k in set(due) | set(improved) | set(ending)}
        if step % self.save_every or not self.active():   # the pack's
            return {}
        self.saves.append((step, {k: books[k].state_dict() for k in books}))
        return {k: "state.pt" for k in self.active()}

    def export(self, trial, out_dir, best_step, stop_step):
        (Path(out_dir) / "adapter.json").write_text(json.dumps({"best": best_step, "stop": stop_step}))

    def last_loss(self, trial):
        return 10.0 - self.step_index

    def finish_extras(self, trials):
        return {}


def _config(tmp_path: Path, **training) -> RunConfig:
    return RunConfig.model_validate({"training": {
        "max_steps": 8, "eval_steps": 1, "save_steps": 4, "logging_steps": 2, "plot_dir": str(tmp_path / "plots"),
        "early_stopping": {"patience": 2, "min_delta": 0.01},
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}}, **training}})


def _run(tmp_path: Path, configs: list[RunConfig], curves, save_every=None, resume=False, engine=None):
    books = {}
    for k, config in enumerate(configs):
        writer = open_run_folder(config, tmp_path / f"t{k}", resume)
        books[k] = TrialBookkeeper(config, writer, output_dir=tmp_path / f"t{k}")
    engine = engine or FakeEngine([c.training.max_steps for c in configs], curves, save_every)
    for k, book in books.items():
        book.start(engine.step_index, None, {}, backend="fake", device="cpu", max_steps=book.max_steps)
    try:
        results = TrainingLoop(engine, books).run()
    finally:
        for book in books.values():
            book.writer.close()
    return engine, books, results


def _events(run_dir: Path) -> list[tuple]:
    """(event, step, sorted field names) of every line, ``time``/``path``/``output_dir`` values aside."""
    return [(e["event"], e["step"], tuple(sorted(e))) for e in read_events(RunFolder(run_dir).events)]


def _shape(run_dir: Path) -> dict:
    metrics = json.loads(RunFolder(run_dir).metrics.read_text())
    return {"keys": list(metrics), **{k: sorted(v) for k, v in metrics.items() if isinstance(v, dict)},
            "stop": metrics["stop"], "best_step": metrics["best"]["step"], "from_step": metrics["adapter"]["from_step"],
            "history": metrics["history"]}


def test_alone_and_beside_others_keep_the_same_books(tmp_path):
    trial = _config(tmp_path)
    _, books1, _ = _run(tmp_path / "k1", [trial], [CURVE], save_every=None)
    neighbours = [_config(tmp_path, max_steps=3), _config(tmp_path, max_steps=8, eval_steps=2)]
    engine3, books3, _ = _run(tmp_path / "k3", [neighbours[0], trial, neighbours[1]],
                              [[9.0, 8.0, 7.0] + [1.0] * 5, CURVE, [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]], save_every=2)
    alone, packed = tmp_path / "k1" / "t0", tmp_path / "k3" / "t1"
    assert books1[0].stop_step == books3[1].stop_step == 5
    assert books1[0].best_step == books3[1].best_step == 3
    assert _shape(alone) == _shape(packed)
    assert _shape(alone)["keys"] == list(METRICS_KEYS)
    assert _shape(alone)["stop"] == {"step": 5, "reason": "early_stopping"}
    assert _shape(alone)["from_step"] == 3
    # Same lines except where a checkpoint was written: that is the engine's policy.
    no_ckpt = lambda events: [e for e in events if e[0] != "checkpoint"]  # noqa: E731
    assert no_ckpt(_events(alone)) == no_ckpt(_events(packed))
    steps = [e[1] for e in _events(alone) if e[0] == "step"]
    assert steps == [2, 4]                                   # logging_steps 2; stopped before max_steps
    assert [e[0] for e in _events(alone)][-1] == "done" and json.loads(
        (RunFolder(alone).final / "adapter.json").read_text()) == {"best": 3, "stop": 5}
    # The single trainer's policy: save_steps, each new best, the end; the pack's: every 2 while one trains.
    assert [e[1] for e in _events(alone) if e[0] == "checkpoint"] == [1, 2, 3, 4, 5]
    assert [e[1] for e in _events(packed) if e[0] == "checkpoint"] == [2, 4]
    assert [s for s, _ in engine3.saves] == [2, 4, 6]        # step 6: trial 2 alone still trains
    # Neighbours: one at max_steps, one with its own eval cadence.
    assert json.loads(RunFolder(tmp_path / "k3" / "t0").metrics.read_text())["stop"] == {"step": 3, "reason": "max_steps"}
    assert [e[1] for e in _events(tmp_path / "k3" / "t2") if e[0] == "eval"] == [2, 4, 6, 8]
    assert {e["tokens"] for e in read_events(RunFolder(packed).events) if e["event"] == "step"} == {40, 80}


def test_a_trial_ended_in_an_earlier_session_is_finished_on_resume(tmp_path):
    """Killed after its last checkpoint but before metrics.json: the resumed loop finishes it without a step."""
    trial = _config(tmp_path, max_steps=3, eval_steps=2)
    engine, _, _ = _run(tmp_path / "first", [trial], [CURVE])
    step, states = engine.saves[-1]
    assert step == 3 and states[0]["stop_step"] == 3
    RunFolder(tmp_path / "first" / "t0").metrics.unlink()

    resumed = FakeEngine([3], [CURVE])
    resumed.step_index = 3
    writer = open_run_folder(trial, tmp_path / "first" / "t0", resume=True)
    book = TrialBookkeeper(trial, writer, output_dir=tmp_path / "first" / "t0")
    book.load_state_dict(states[0])
    book.start(3, 3, {}, backend="fake", device="cpu", max_steps=3)
    try:
        results = TrainingLoop(resumed, {0: book}, resumed_from=3).run()
    finally:
        writer.close()
    assert resumed.saves == [] and resumed.step_index == 3
    summary = results[0][0]
    assert summary["stop"] == {"step": 3, "reason": "max_steps"} and summary["resumed_from"] == 3
    assert [h["step"] for h in summary["history"]] == [2, 3]   # step 3's eval was logged before the kill


def test_cancel_drops_one_trial(tmp_path):
    configs = [_config(tmp_path, max_steps=4, eval_steps=2), _config(tmp_path, max_steps=4, eval_steps=2)]
    books = {k: TrialBookkeeper(c, open_run_folder(c, tmp_path / f"t{k}", False), output_dir=tmp_path / f"t{k}")
             for k, c in enumerate(configs)}
    engine = FakeEngine([4, 4], [CURVE, CURVE], save_every=2)
    for book in books.values():
        book.start(0, None, {}, backend="fake", device="cpu", max_steps=4)
    loop = TrainingLoop(engine, books, cancel_requested=lambda k: k == 1 and engine.step_index >= 2)
    try:
        results = loop.run()
    finally:
        for book in books.values():
            book.writer.close()
    assert sorted(results) == [0] and books[1].cancelled
    assert read_events(RunFolder(tmp_path / "t1").events)[-1] | {"time": 0} == {
        "event": "done", "step": 2, "time": 0, "reason": "cancelled"}
    assert not RunFolder(tmp_path / "t1").metrics.exists()


@pytest.mark.parametrize("enabled", [True, False])
def test_early_stopping_off_trains_to_max_steps(tmp_path, enabled):
    config = _config(tmp_path, early_stopping={"enabled": enabled, "patience": 2, "min_delta": 0.01})
    _, books, results = _run(tmp_path, [config], [CURVE])
    assert books[0].stop_step == (5 if enabled else 8)
    assert (results[0][0]["best"] is None) is (not enabled)
