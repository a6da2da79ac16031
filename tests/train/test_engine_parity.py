"""Parity (issue 12 item 5): one trial config trains the same whichever engine runs it.

The same config is trained three ways on CPU (the 2-layer tiny model, fp32):

* by ``spelltransfer train`` -- ``run_training``, hf backend;
* by a pack job holding it alone (K = 1);
* by a pack job holding it beside two other trials (K = 3, different r, lr, batch, steps).

All three must log the same loss and lr at every step (absolute difference < 1e-4; the losses
are ~10, so that is also ~1e-5 relative), the same tokens, the same validation metrics at every
evaluation (eval_loss within 1e-4, generation accuracies equal), stop at the same step for the
same reason, write byte-identical ``config.yaml`` and a ``metrics.json`` with the same keys
(top level and inside each section).

The trial exercises what used to be decided twice: warmup from ``warmup_ratio`` under a cosine
schedule, AdamW with weight decay and clipping, gradient accumulation, and early stopping on
generation accuracy (the validation scorer).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spelltransfer.run_folder import RunFolder, read_events
from spelltransfer.train.config import load_training_config
from spelltransfer.train.packed.job import PackManifest, PackMember, run_pack, write_manifest

LOSS_TOL = 1e-4   # absolute

TRIAL = ["training.seed=7", "model.lora.r=8", "model.lora.alpha=16", "optimizer.lr=3e-3",
         "optimizer.weight_decay=0.01", "optimizer.max_grad_norm=0.5", "training.batch_size=4",
         "training.grad_accum=2", "training.max_steps=6", "training.eval_steps=3",
         "training.early_stopping.metric=accuracy", "training.early_stopping.patience=2"]
NEIGHBOURS = {
    "n-1": ["training.seed=8", "model.lora.r=4", "model.lora.alpha=8", "optimizer.lr=1e-3",
            "training.batch_size=2", "training.grad_accum=1", "training.max_steps=4"],
    "n-2": ["training.seed=9", "model.lora.r=16", "model.lora.alpha=32", "optimizer.lr=5e-3",
            "training.batch_size=6", "training.grad_accum=3", "training.max_steps=7", "optimizer.max_grad_norm=null"],
}


@pytest.fixture(scope="module")
def common(tiny_model_path, tiny_data_dir, tmp_path_factory) -> list[str]:
    plots = tmp_path_factory.mktemp("parity-plots")
    return [f"model.name={tiny_model_path}", f"training.data_dir={tiny_data_dir}", "model.max_seq_length=40",
            "training.save_steps=3", "training.eval_samples=4", "training.eval_batch_size=4",
            "training.precision=fp32", "training.num_threads=1", "training.backend=hf",
            "training.tracking.mlflow.enabled=false", "training.tracking.wandb.enabled=false",
            f"training.plot_dir={plots}", "scheduler.name=cosine", "scheduler.warmup_steps=null",
            "scheduler.warmup_ratio=0.3", "transfer.eval_items_per_task=2"]


@pytest.fixture(scope="module")
def base_config(repo_root) -> str:
    return str(repo_root / "configs" / "training" / "config.yaml")


def _pack(root: Path, members: dict[str, list[str]], base_config: str, common: list[str]) -> dict[str, Path]:
    pack_dir = root / "pack"
    manifest = PackManifest(pack_id=root.name, members=[
        PackMember(trial_id=name, config_path=base_config, overrides=common + extra,
                   output_dir=str(root / "runs" / name)) for name, extra in members.items()])
    write_manifest(pack_dir, manifest)
    outcome = run_pack(pack_dir)
    assert outcome == {name: "finished" for name in members}, outcome
    return {m.trial_id: Path(m.output_dir) for m in manifest.members}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base_config, common) -> dict[str, Path]:
    """The trial's run folder from each engine: alone (run_training), packed K=1, packed K=3."""
    from spelltransfer.train import run_training

    root = tmp_path_factory.mktemp("parity")
    alone = run_training(load_training_config(base_config, common + TRIAL), root / "alone").output_dir
    k1 = _pack(root / "k1", {"trial": TRIAL}, base_config, common)["trial"]
    k3 = _pack(root / "k3", {"n-1": NEIGHBOURS["n-1"], "trial": TRIAL, "n-2": NEIGHBOURS["n-2"]},
               base_config, common)["trial"]
    return {"alone": alone, "packed K=1": k1, "packed K=3": k3}


def _by_step(run_dir: Path, event: str) -> dict[int, dict]:
    """Events of one kind by step (the last line for a step wins, as a follower reads them)."""
    return {e["step"]: e for e in read_events(RunFolder(run_dir).events) if e["event"] == event}


# Sections whose content belongs to the engine: a packed member's validation evaluation and pack;
# null for a run trained alone (the worker's eval phase adds ``validation`` there).
ENGINE_SECTIONS = ("validation", "pack")


def _keys(metrics: dict) -> dict[str, list[str]]:
    """metrics.json's key structure: top-level keys, and the keys of each section that is a mapping."""
    shape = {"": sorted(metrics)}
    for name, value in metrics.items():
        if isinstance(value, dict) and name not in ENGINE_SECTIONS:
            shape[name] = sorted(value)
    shape["history[]"] = sorted({k for row in metrics["history"] for k in row})
    return shape


ENGINES = ("packed K=1", "packed K=3")


@pytest.mark.parametrize("engine", ENGINES)
def test_same_loss_and_lr_every_step(runs, engine):
    want, got = _by_step(runs["alone"], "step"), _by_step(runs[engine], "step")
    assert sorted(got) == sorted(want) == list(range(1, len(want) + 1))
    loss_diff = max(abs(got[s]["loss"] - want[s]["loss"]) for s in want)
    lr_diff = max(abs(got[s]["lr"] - want[s]["lr"]) for s in want)
    print(f"{engine}: max |loss - alone| = {loss_diff:.2e}, max |lr - alone| = {lr_diff:.2e}")
    assert loss_diff < LOSS_TOL, {s: (want[s]["loss"], got[s]["loss"]) for s in want}
    assert lr_diff < 1e-12, {s: (want[s]["lr"], got[s]["lr"]) for s in want}
    assert {s: e["tokens"] for s, e in got.items()} == {s: e["tokens"] for s, e in want.items()}


@pytest.mark.parametrize("engine", ENGINES)
def test_same_validation_metrics(runs, engine):
    want, got = _by_step(runs["alone"], "eval"), _by_step(runs[engine], "eval")
    assert sorted(got) == sorted(want)
    for step in want:
        ours, theirs = got[step]["metrics"], want[step]["metrics"]
        assert sorted(ours) == sorted(theirs), step
        assert abs(ours["eval_loss"] - theirs["eval_loss"]) < LOSS_TOL, (step, ours, theirs)
        assert {k: v for k, v in ours.items() if k != "eval_loss"} == {k: v for k, v in theirs.items() if k != "eval_loss"}


@pytest.mark.parametrize("engine", ENGINES)
def test_same_resolved_config(runs, engine):
    assert RunFolder(runs[engine]).config.read_text() == RunFolder(runs["alone"]).config.read_text()


@pytest.mark.parametrize("engine", ENGINES)
def test_same_metrics_keys_and_outcome(runs, engine):
    want = json.loads(RunFolder(runs["alone"]).metrics.read_text())
    got = json.loads(RunFolder(runs[engine]).metrics.read_text())
    assert _keys(got) == _keys(want)
    assert want["validation"] is None and want["pack"] is None
    assert got["pack"]["pack_id"] == runs[engine].parent.parent.name and "trial" in got["pack"]["members"]
    assert set(got["validation"]["tasks"]) == {"spelling", "position", "count"}
    assert got["stop"] == want["stop"]
    assert (got["best"] or {}).get("step") == (want["best"] or {}).get("step")
    assert got["adapter"]["from_step"] == want["adapter"]["from_step"]
    assert got["tokens_seen"] == want["tokens_seen"]
    assert abs(got["last_train_loss"] - want["last_train_loss"]) < LOSS_TOL


@pytest.mark.parametrize("setting, named", [
    ("training.precision=bf16", "training.precision"),            # fp32 weights on CPU: would be ignored
    ("model.gradient_checkpointing=true", "model.gradient_checkpointing"),
    ("model.lora.dropout=0.1", "model.lora.dropout"),
    ("training.backend=unsloth", "training.backend"),             # asked for by name; auto may pack
])
def test_a_setting_the_packed_engine_cannot_honour_is_refused_by_name(tmp_path, base_config, common, setting, named):
    """Not ignored: the worker does not pack such a config (pack_key None), and a pack holding it
    fails before anything trains with a ConfigError naming the setting."""
    from spelltransfer.errors import ConfigError
    from spelltransfer.train.packed.job import pack_key, unpackable_reason

    config = load_training_config(base_config, common + TRIAL + [setting])
    assert pack_key(config, "cpu") is None and unpackable_reason(config, "cpu").startswith(named)
    pack_dir = tmp_path / "pack"
    write_manifest(pack_dir, PackManifest(pack_id="refused", members=[
        PackMember(trial_id="t", config_path=base_config, overrides=common + TRIAL + [setting],
                   output_dir=str(tmp_path / "runs" / "t"))]))
    with pytest.raises(ConfigError, match=rf"pack member t: {named}"):
        run_pack(pack_dir)
    assert not (tmp_path / "runs").exists()


def test_precision_matching_the_weights_packs():
    """bf16 weights on CUDA with bf16 (or auto) precision compute alike in both engines: packable."""
    from spelltransfer.train.config import RunConfig
    from spelltransfer.train.packed.job import unpackable_reason

    def config(precision, dtype):
        return RunConfig.model_validate({"training": {"precision": precision}, "model": {"dtype": dtype}})

    assert unpackable_reason(config("auto", "auto"), "cuda") is None
    assert unpackable_reason(config("bf16", "auto"), "cuda") is None
    assert unpackable_reason(config("fp32", "float32"), "cuda") is None
    assert unpackable_reason(config("fp32", "auto"), "cuda").startswith("training.precision")
    assert unpackable_reason(config("bf16", "float32"), "cpu").startswith("training.precision")


@pytest.mark.parametrize("engine", ENGINES)
def test_same_adapter(runs, engine):
    """The exported adapter (the best step's, accuracy early stopping) holds the same weights."""
    import torch
    from safetensors.torch import load_file

    ours = load_file(str(RunFolder(runs[engine]).final / "adapter_model.safetensors"))
    theirs = load_file(str(RunFolder(runs["alone"]).final / "adapter_model.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=1e-4)


# What only a packed member's start line says: which pack it trains in.
PACK_START_FIELDS = {"pack_id", "pack_members"}


@pytest.mark.parametrize("engine", ENGINES)
def test_same_events_schema(runs, engine):
    """The same event lines (type, step, field names) in the same order: both engines log through
    one loop (train/loop.py); only where a checkpoint is written is the engine's (the pack saves its
    whole state every save_steps, a lone run also at each new best step and at its end)."""
    def lines(run_dir):
        return [(e["event"], e["step"], sorted(set(e) - PACK_START_FIELDS))
                for e in read_events(RunFolder(run_dir).events) if e["event"] != "checkpoint"]

    assert lines(runs[engine]) == lines(runs["alone"])
