"""A sweep's runs through the real MLflow server into real S3, then NAME@champion and back out.

What a trial leaves is checked in three places: the MLflow run (params, step metrics, artifact
listing), the S3 bucket listed with boto3 (keys, sizes, MD5 ETags against the local files), and
the registry (version tags, alias). The champion is pulled with the CLI and loaded with PEFT.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from spelltransfer.registry import model_registry, s3
from spelltransfer.registry.outbox import Outbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_adapter(base_model_path: str, out: Path, seed: int) -> Path:
    """A real PEFT LoRA adapter on the tiny model, with seed-dependent weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model_path)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    peft_model.save_pretrained(out)
    return out


def make_trial_folder(root: Path, adapter_src: Path | None, seed: int) -> Path:
    """What a training run folder holds that the tracker uploads (see docs/architecture.md)."""
    import shutil

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(f"experiment: rt\nseed: {seed}\nlora:\n  r: 4\n")
    (root / "metrics.json").write_text(json.dumps({"best": {"spelling_accuracy": 0.1 * seed}, "stop_step": 4}))
    (root / "predictions.jsonl").write_text("".join(
        json.dumps({"task": "spelling", "word": w, "prediction": "-".join(w)}) + "\n" for w in ["cat", "garden"]))
    (root / "early_stopping.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    checkpoint = root / "checkpoints" / "step-4"
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 4}))
    if adapter_src is not None:
        shutil.copytree(adapter_src, root / "final")
    return root


def log_trial(client, outbox: Outbox, experiment_id: str, parent_id: str, folder: Path, accuracy: float) -> str:
    run = client.create_run(experiment_id, run_name=folder.name, tags={"mlflow.parentRunId": parent_id, "sweep": "rt"})
    run_id = run.info.run_id
    client.log_param(run_id, "lora.r", "4")
    client.log_param(run_id, "optimizer.lr", "2e-4")
    for step in (1, 2, 3, 4):
        client.log_metric(run_id, "train/loss", 2.0 / step, step=step)
    client.log_metric(run_id, "eval/spelling_accuracy", accuracy, step=4)
    client.log_metric(run_id, "eval/position_accuracy", accuracy / 2, step=4)
    client.log_metric(run_id, "eval/count_accuracy", accuracy / 3, step=4)
    for name in ("config.yaml", "metrics.json", "predictions.jsonl", "early_stopping.png"):
        outbox.submit(folder / name, run_id)
    outbox.submit(folder / "checkpoints" / "step-4", run_id, "checkpoints/step-4")
    if (folder / "final").exists():
        outbox.submit(folder / "final", run_id, "adapter")
    client.set_terminated(run_id)
    return run_id


def test_trial_artifacts_round_trip_mlflow_to_s3(live_stack, mlflow_client, tmp_path, tiny_model_path):
    client = mlflow_client
    adapter = make_adapter(tiny_model_path, tmp_path / "adapter-src", seed=1)
    folder = make_trial_folder(tmp_path / "trial-0", adapter, seed=1)
    experiment_id = client.create_experiment("roundtrip")
    parent = client.create_run(experiment_id, run_name="sweep-rt", tags={"sweep": "rt"})
    started = time.monotonic()
    with Outbox(tmp_path / "outbox", live_stack.tracking_uri, base_delay_s=0.2, max_delay_s=2) as outbox:
        run_id = log_trial(client, outbox, experiment_id, parent.info.run_id, folder, 0.5)
        assert outbox.flush(timeout=120), outbox.stats()
        receipts = outbox.receipts()
    print(f"\nuploaded + verified {sum(len(r['files']) for r in receipts)} files in {time.monotonic() - started:.1f} s")

    # MLflow: the run's data and its artifact tree.
    run = client.get_run(run_id)
    assert run.data.params == {"lora.r": "4", "optimizer.lr": "2e-4"}
    assert [m.value for m in client.get_metric_history(run_id, "train/loss")] == [2.0, 1.0, 2.0 / 3, 0.5]
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    top = {info.path for info in client.list_artifacts(run_id)}
    assert top == {"adapter", "checkpoints", "config.yaml", "metrics.json", "predictions.jsonl", "early_stopping.png"}

    # S3: every file under <experiment>/<run>/artifacts/ with the local size and MD5.
    objects = s3.list_objects(live_stack.s3_endpoint_url, live_stack.credentials(), live_stack.bucket,
                              prefix=f"{experiment_id}/{run_id}/artifacts/")
    by_key = {o["key"].split("/artifacts/", 1)[1]: o for o in objects}
    expected = {
        "config.yaml": folder / "config.yaml", "metrics.json": folder / "metrics.json",
        "predictions.jsonl": folder / "predictions.jsonl", "early_stopping.png": folder / "early_stopping.png",
        "checkpoints/step-4/trainer_state.json": folder / "checkpoints/step-4/trainer_state.json",
        **{f"adapter/{p.name}": p for p in (folder / "final").iterdir()},
    }
    assert set(by_key) == set(expected)
    for key, local in expected.items():
        assert by_key[key]["size"] == local.stat().st_size, key
        assert by_key[key]["etag"] == _md5(local), key  # single-part PUT: ETag is the MD5
    print("S3 listing:\n" + "\n".join(f"  s3://{live_stack.bucket}/{o['key']}  {o['size']} B" for o in objects))
    assert not list((tmp_path / "outbox" / "entries").iterdir()), "local copies must be gone after verification"


def test_register_best_trial_as_champion_and_pull(live_stack, mlflow_client, tmp_path, tiny_model_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    client = mlflow_client
    experiment_id = client.create_experiment("sweep-champion")
    parent = client.create_run(experiment_id, run_name="sweep-champion")
    accuracies = [0.30, 0.72, 0.55]
    run_ids = []
    with Outbox(tmp_path / "outbox", live_stack.tracking_uri, base_delay_s=0.2, max_delay_s=2) as outbox:
        for seed, accuracy in enumerate(accuracies):
            adapter = make_adapter(tiny_model_path, tmp_path / f"adapter-{seed}", seed=seed)
            folder = make_trial_folder(tmp_path / f"trial-{seed}", adapter, seed=seed)
            run_ids.append(log_trial(client, outbox, experiment_id, parent.info.run_id, folder, accuracy))
        assert outbox.flush(timeout=120), outbox.stats()
    client.set_terminated(parent.info.run_id)

    # Register through the CLI, the way a user (or the sweep controller's final step) does.
    result = live_stack.cli(
        "registry", "register", "--sweep-run-id", parent.info.run_id, "--name", "spelling-lora",
        "--metric", "eval/spelling_accuracy", "--tracking-uri", live_stack.tracking_uri,
    )
    assert "spelling-lora@champion" in result.stdout
    champion = client.get_model_version_by_alias("spelling-lora", "champion")
    assert champion.run_id == run_ids[1]
    assert float(champion.tags["eval/spelling_accuracy"]) == pytest.approx(0.72)
    assert float(champion.tags["eval/count_accuracy"]) == pytest.approx(0.24)
    assert champion.tags["sweep_run_id"] == parent.info.run_id
    assert "train/loss" not in champion.tags

    # A second, better registration moves the alias; the first version stays.
    second = model_registry.register_run(live_stack.tracking_uri, run_ids[2], "spelling-lora",
                                         metric="eval/spelling_accuracy")
    assert client.get_model_version_by_alias("spelling-lora", "champion").version == second.version
    client.set_registered_model_alias("spelling-lora", "champion", champion.version)

    out = tmp_path / "pulled"
    live_stack.cli("registry", "pull", "spelling-lora@champion", "--out", str(out),
                   "--tracking-uri", live_stack.tracking_uri)
    assert {"adapter_config.json", "adapter_model.safetensors", "registry.json"} <= {p.name for p in out.iterdir()}
    provenance = json.loads((out / "registry.json").read_text())
    assert provenance["run_id"] == run_ids[1] and provenance["alias"] == "champion"
    pulled = load_file(out / "adapter_model.safetensors")
    original = load_file(tmp_path / "adapter-1" / "adapter_model.safetensors")
    assert pulled.keys() == original.keys()
    assert all(torch.equal(pulled[k], original[k]) for k in pulled)
    # The folder is what eval --adapter and vLLM load: a PEFT adapter on the base model.
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), out)
    assert model.peft_config["default"].r == 4

    again = live_stack.cli("registry", "pull", "spelling-lora@champion", "--out", str(out),
                           "--tracking-uri", live_stack.tracking_uri, check=False)
    assert "--overwrite" in str(again.exception)
    missing = live_stack.cli("registry", "pull", "nope@champion", "--out", str(tmp_path / "x"),
                             "--tracking-uri", live_stack.tracking_uri, check=False)
    assert "nope@champion" in str(missing.exception) and not (tmp_path / "x").exists()


def test_champion_from_sweep_rows_that_link_their_training_runs(live_stack, mlflow_client, tmp_path):
    """The sweep controller's trial rows hold metrics only; the trainer's run holds the adapter."""
    client = mlflow_client
    train_experiment = client.create_experiment("linked-train")
    sweep_experiment = client.create_experiment("linked-sweeps")
    parent = client.create_run(sweep_experiment, run_name="sweep-linked")
    train_runs = []
    with Outbox(tmp_path / "outbox", live_stack.tracking_uri, base_delay_s=0.2, max_delay_s=2) as outbox:
        for number, accuracy in enumerate([0.4, 0.9]):
            train_run = client.create_run(train_experiment, run_name=f"train-{number}").info.run_id
            client.log_metric(train_run, "best/spelling_accuracy", accuracy)
            adapter = tmp_path / f"adapter-{number}"
            adapter.mkdir()
            (adapter / "adapter_config.json").write_text(json.dumps({"r": 4, "peft_type": "LORA", "n": number}))
            (adapter / "adapter_model.safetensors").write_bytes(bytes([number]) * 64)
            outbox.submit(adapter, train_run, "adapter")
            client.set_terminated(train_run)
            row = client.create_run(sweep_experiment, run_name=f"sweep-linked-trial-{number}", tags={
                "mlflow.parentRunId": parent.info.run_id, model_registry.TRAIN_RUN_TAG: train_run})
            client.log_metric(row.info.run_id, "spelling_accuracy", accuracy)
            client.log_metric(row.info.run_id, "objective", accuracy)
            client.set_terminated(row.info.run_id)
            train_runs.append(train_run)
        assert outbox.flush(timeout=60)
    result = model_registry.register_best_trial(live_stack.tracking_uri, parent.info.run_id, "linked-lora",
                                                metric="objective")
    assert result.run_id == train_runs[1]
    version = client.get_model_version_by_alias("linked-lora", "champion")
    assert float(version.tags["trial/spelling_accuracy"]) == pytest.approx(0.9)
    assert float(version.tags["best/spelling_accuracy"]) == pytest.approx(0.9)
    out = model_registry.pull(live_stack.tracking_uri, "linked-lora@champion", tmp_path / "pulled")
    assert json.loads((out / "adapter_config.json").read_text())["n"] == 1
    # A row with neither an adapter nor a link is a clear error, not a broken version.
    lonely = client.create_run(sweep_experiment, tags={"mlflow.parentRunId": parent.info.run_id})
    client.log_metric(lonely.info.run_id, "objective", 2.0)
    client.set_terminated(lonely.info.run_id)
    with pytest.raises(Exception, match="spelltransfer.train_run_id"):
        model_registry.register_best_trial(live_stack.tracking_uri, parent.info.run_id, "linked-lora", metric="objective")
