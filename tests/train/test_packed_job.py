"""The pack job (``python -m spelltransfer.train.packed.job``): K worker trials trained as one process.

CPU, the 2-layer tiny model, fp32. Each member of a 3-trial pack (different r, alpha, lr, batch,
grad-accum, max steps, weight decay, clipping; one stopping early) must log the same loss at every
step as the same config trained alone by ``run_training`` (hf backend), within 1e-4, and end in
the same place (stop step and reason, adapter weights); its run folder must hold what the worker
reads (metrics.json with the three validation accuracies, a PEFT adapter, done event).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spelltransfer.errors import ConfigError
from spelltransfer.train.config import load_training_config
from spelltransfer.run_folder import read_events
from spelltransfer.train.packed.job import PackManifest, PackMember, pack_key, run_pack, write_manifest

LOSS_TOL = 1e-4
TASKS = ("spelling", "position", "count")

MEMBERS = {
    "m-a": ["training.seed=11", "model.lora.r=4", "model.lora.alpha=8", "optimizer.lr=1e-3",
            "training.batch_size=4", "training.grad_accum=1", "training.max_steps=5"],
    # Stops early: min_delta 10 means the second evaluation can never improve, patience 1.
    "m-b": ["training.seed=22", "model.lora.r=8", "model.lora.alpha=32", "optimizer.lr=5e-3",
            "training.batch_size=8", "training.grad_accum=2", "training.max_steps=4", "optimizer.weight_decay=0.01",
            "optimizer.max_grad_norm=0.05", "training.eval_steps=1", "training.early_stopping.patience=1",
            "training.early_stopping.min_delta=10.0"],
    "m-c": ["training.seed=33", "model.lora.r=16", "model.lora.alpha=16", "optimizer.lr=2e-3",
            "training.batch_size=6", "training.grad_accum=3", "training.max_steps=6", "optimizer.max_grad_norm=null"],
}


@pytest.fixture(scope="module")
def common(tiny_model_path, tiny_data_dir, tmp_path_factory) -> list[str]:
    plots = tmp_path_factory.mktemp("pack-plots")
    return [f"model.name={tiny_model_path}", f"training.data_dir={tiny_data_dir}", "model.max_seq_length=40",
            "training.eval_steps=2", "training.save_steps=2", "training.eval_samples=4", "training.precision=fp32",
            "training.num_threads=1", "training.backend=hf", "training.tracking.mlflow.enabled=false",
            "training.tracking.wandb.enabled=false", f"training.plot_dir={plots}", "scheduler.warmup_steps=1",
            "transfer.eval_items_per_task=2"]


@pytest.fixture(scope="module")
def base_config(repo_root) -> str:
    return str(repo_root / "configs" / "training" / "config.yaml")


def make_pack(pack_dir: Path, members: dict[str, list[str]], base_config: str, common: list[str]) -> PackManifest:
    manifest = PackManifest(pack_id=pack_dir.name, members=[
        PackMember(trial_id=name, config_path=base_config, overrides=common + extra,
                   output_dir=str(pack_dir.parent / "runs" / name)) for name, extra in members.items()])
    write_manifest(pack_dir, manifest)
    return manifest


def step_losses(run_dir: Path) -> dict[int, float]:
    """Loss by step; after a resume the last line for a step wins (as a follower reads it)."""
    return {e["step"]: e["loss"] for e in read_events(Path(run_dir) / "events.jsonl") if e["event"] == "step"}


def eval_losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["metrics"]["eval_loss"] for e in read_events(Path(run_dir) / "events.jsonl")
            if e["event"] == "eval"}


@pytest.fixture(scope="module")
def packed(tmp_path_factory, base_config, common):
    pack_dir = tmp_path_factory.mktemp("packs") / "pack-1"
    manifest = make_pack(pack_dir, MEMBERS, base_config, common)
    started = time.perf_counter()
    outcome = run_pack(pack_dir)
    assert outcome == {name: "finished" for name in MEMBERS}, outcome
    print(f"pack of {len(MEMBERS)} trained in {time.perf_counter() - started:.1f}s")
    return manifest


@pytest.fixture(scope="module")
def alone(tmp_path_factory, base_config, common):
    """Each member's config trained alone by `spelltransfer train` (run_training, hf backend)."""
    from spelltransfer.train import run_training

    root = tmp_path_factory.mktemp("alone")
    return {name: run_training(load_training_config(base_config, common + extra), root / name)
            for name, extra in MEMBERS.items()}


def test_member_trains_like_alone(packed, alone):
    for member in packed.members:
        reference = alone[member.trial_id]
        got, want = step_losses(Path(member.output_dir)), step_losses(reference.output_dir)
        assert sorted(got) == sorted(want) == list(range(1, reference.stop_step + 1)), member.trial_id
        assert max(abs(got[s] - want[s]) for s in want) < LOSS_TOL, (member.trial_id, got, want)
        print(member.trial_id, "max |loss packed - alone|:", max(abs(got[s] - want[s]) for s in want))
        tokens = lambda run_dir: {e["step"]: e["tokens"] for e in read_events(Path(run_dir) / "events.jsonl")  # noqa: E731
                                  if e["event"] == "step"}
        assert tokens(member.output_dir) == tokens(reference.output_dir)
        got_eval, want_eval = eval_losses(Path(member.output_dir)), eval_losses(reference.output_dir)
        assert sorted(got_eval) == sorted(want_eval)
        assert max(abs(got_eval[s] - want_eval[s]) for s in want_eval) < LOSS_TOL, (member.trial_id, got_eval, want_eval)
        metrics = json.loads((Path(member.output_dir) / "metrics.json").read_text())
        assert metrics["stop"] == {"step": reference.stop_step, "reason": reference.stop_reason}
        assert (metrics["best"] or {}).get("step") == reference.best_step
        assert metrics["backend"] == "packed" and metrics["pack"]["pack_id"] == "pack-1"
        want_keys = set(json.loads(reference.metrics_path.read_text())) | {"validation", "pack"}
        assert set(metrics) == want_keys
        # The exported adapter is the one training alone writes (best step's weights under early stopping).
        from safetensors.torch import load_file

        ours = load_file(str(Path(member.output_dir) / "final" / "adapter_model.safetensors"))
        theirs = load_file(str(reference.adapter_dir / "adapter_model.safetensors"))
        assert ours.keys() == theirs.keys()
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=1e-4)
    # One member stopped early, at the second evaluation, keeping its first step's adapter.
    assert alone["m-b"].stop_reason == "early_stopping" and alone["m-b"].stop_step == 2 and alone["m-b"].best_step == 1


def test_run_folder_contract(packed, tiny_model_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from spelltransfer.platform.eval_job import _from_run_dir, run

    for member in packed.members:
        run_dir = Path(member.output_dir)
        events = read_events(run_dir / "events.jsonl")
        assert events[0]["event"] == "start" and events[0]["backend"] == "packed"
        assert events[0]["pack_id"] == "pack-1" and events[0]["resumed_from"] is None
        assert events[-1]["event"] == "done"
        assert all({"loss", "lr", "tokens"} <= set(e) for e in events if e["event"] == "step")
        assert (run_dir / "config.yaml").is_file() and (run_dir / "final" / "tokenizer_config.json").is_file()
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), str(run_dir / "final"))
        assert model.peft_config["default"].r == load_training_config(member.config_path, member.overrides).model.lora.r
        # Validation accuracies for all three tasks, in the shape of the worker's evaluation phase,
        # equal to what `platform.eval_job --run-dir` computes from the exported adapter.
        validation = json.loads((run_dir / "metrics.json").read_text())["validation"]
        assert all(validation["tasks"][task]["n"] == 2 for task in TASKS)
        reference = run(out=str(run_dir / "reference_eval.json"), **_from_run_dir(run_dir))
        for task in TASKS:
            assert validation["tasks"][task]["accuracy"] == reference.tasks[task].accuracy
        ours = [json.loads(line)["output"] for line in (run_dir / "validation_eval.predictions.jsonl").read_text().splitlines()]
        assert ours == [p.output for p in reference.predictions]


def test_pack_key_groups_compatible_configs(base_config, common):
    def config(*extra):
        return load_training_config(base_config, common + list(extra))

    key = pack_key(config())
    assert key is not None
    assert pack_key(config(*MEMBERS["m-b"], "training.logging_steps=3")) == key   # per-trial / per-member fields
    assert pack_key(config("model.max_seq_length=48")) != key
    assert pack_key(config("scheduler.name=constant")) != key
    assert pack_key(config("model.lora.dropout=0.1")) is None                    # no LoRA dropout when packed
    # Mixed-in transfer tasks are drawn with the seed: then the seed must match too.
    mixed = "transfer.mix_count_fraction=0.2"
    assert pack_key(config(mixed, "training.seed=1")) != pack_key(config(mixed, "training.seed=2"))


def test_incompatible_member_is_rejected(tmp_path, base_config, common):
    members = {"x": MEMBERS["m-a"], "y": MEMBERS["m-c"] + ["model.max_seq_length=48"]}
    make_pack(tmp_path / "pack-bad", members, base_config, common)
    with pytest.raises(ConfigError, match=r"pack member y: model\.max_seq_length"):
        run_pack(tmp_path / "pack-bad")
    assert not (tmp_path / "runs").exists()   # nothing started


def test_resume_after_kill_matches_uninterrupted(tmp_path, base_config, common):
    """kill -9 mid-run, then --resume: the same losses as a run never interrupted; finished members are skipped."""
    members = {"short": MEMBERS["m-a"], "long": MEMBERS["m-c"] + ["training.max_steps=150", "training.save_steps=4",
                                                                    "training.eval_steps=50"]}
    reference_dir = tmp_path / "reference" / "pack-r"
    make_pack(reference_dir, members, base_config, common)
    run_pack(reference_dir)

    pack_dir = tmp_path / "killed" / "pack-k"
    manifest = make_pack(pack_dir, members, base_config, common)
    short_dir, long_dir = (Path(m.output_dir) for m in manifest.members)
    child = subprocess.Popen([sys.executable, "-m", "spelltransfer.train.packed.job", "--pack-dir", str(pack_dir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        checkpoints = [e["step"] for e in read_events(long_dir / "events.jsonl") if e["event"] == "checkpoint"]
        if (short_dir / "metrics.json").exists() and checkpoints and checkpoints[-1] >= 8:
            break
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint after the short member finished"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not any(e["event"] == "done" for e in read_events(long_dir / "events.jsonl")), "killed too late"
    short_metrics = (short_dir / "metrics.json").read_text()

    assert run_pack(pack_dir, resume=True) == {"short": "finished", "long": "finished"}
    starts = [e for e in read_events(long_dir / "events.jsonl") if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from"] >= 8
    # The finished member was not trained again.
    assert [e["event"] for e in read_events(short_dir / "events.jsonl")].count("start") == 1
    assert (short_dir / "metrics.json").read_text() == short_metrics
    for name, run_dir in (("short", short_dir), ("long", long_dir)):
        got, want = step_losses(run_dir), step_losses(reference_dir.parent / "runs" / name)
        assert sorted(got) == sorted(want)
        assert max(abs(got[s] - want[s]) for s in want) < LOSS_TOL, name
    assert json.loads((long_dir / "metrics.json").read_text())["stop"] == {"step": 150, "reason": "max_steps"}
