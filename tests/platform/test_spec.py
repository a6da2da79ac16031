"""Sweep specs: every bad value is named by its field; grids, objectives and pruner values."""

from __future__ import annotations

import pytest
import yaml

from spelltransfer.errors import ConfigError
from spelltransfer.sweep.spec import check_training_config, parse_spec, trial_overrides
from spelltransfer.sweep.study import intermediate_value, make_pruner, objective_value, task_accuracies

GOOD = {
    "name": "t", "strategy": "random", "max_trials": 3,
    "parameters": {"model.lora.r": {"type": "int", "low": 4, "high": 32, "log": True},
                   "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
                   "training.batch_size": {"values": [4, 8, 16, 32]}},
}


def spec_with(**changes):
    data = {**GOOD, **changes}
    return parse_spec(yaml.safe_dump(data), "spec.yaml")


@pytest.mark.parametrize("changes, field", [
    ({"max_trials": 0}, "max_trials"),
    ({"strategy": "bayes"}, "strategy"),
    ({"objective": "accuracy"}, "objective"),
    ({"name": "bad name"}, "name"),
    ({"parameters": {"optimizer.lr": {"low": 1e-3, "high": 1e-4}}}, "parameters.optimizer.lr"),
    ({"parameters": {"optimizer.lr": {"low": 0, "high": 1, "log": True}}}, "parameters.optimizer.lr"),
    ({"parameters": {"optimizer.lr": {"low": 1e-4}}}, "parameters.optimizer.lr"),
    ({"parameters": {"lr": {"values": [1]}}}, "parameters.lr"),
    ({"parameters": {}}, "parameters"),
    ({"pruner": {"kind": "median"}}, "pruner.kind"),
    ({"pruner": {"kind": "asha", "reduction_factor": 1}}, "pruner.reduction_factor"),
    ({"max_retries": -1}, "max_retries"),
    ({"wandb": {"mode": "cloud"}}, "wandb.mode"),
    ({"wandb": {"enable": True}}, "wandb.enable"),
    ({"storage": "redis://x"}, "storage"),
    ({"registry": {"enabled": True}, "mlflow": {"enabled": False}}, "registry.enabled"),
    ({"registry": {"mode": "best"}}, "registry.mode"),
    ({"unknown_key": 1}, "unknown_key"),
])
def test_bad_values_name_their_field(changes, field):
    with pytest.raises(ConfigError) as error:
        spec_with(**changes)
    assert f"{field}:" in str(error.value) and "spec.yaml" in str(error.value)


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ConfigError, match=r"spec.yaml:2"):
        parse_spec("name: x\nparameters: {a: [}\nmax_trials: 1\n", "spec.yaml")


def test_grid_size_caps_max_trials():
    spec = spec_with(strategy="grid", max_trials=100, parameters={
        "model.lora.r": {"type": "int", "low": 4, "high": 32, "log": True},   # 4, 8, 16, 32
        "training.grad_accum": {"values": [1, 2]}})
    assert spec.grid()["model.lora.r"] == [4, 8, 16, 32]
    assert spec.trial_count() == 8
    with pytest.raises(ConfigError, match="parameters.optimizer.lr"):
        spec_with(strategy="grid", parameters={"optimizer.lr": {"low": 1e-4, "high": 1e-3}}).grid()


def test_training_config_checked_per_parameter(base_config):
    check_training_config(spec_with(base_config=base_config))
    with pytest.raises(ConfigError, match=r"parameters.model.lora.rank:.*rank"):
        check_training_config(spec_with(base_config=base_config, parameters={"model.lora.rank": {"values": [4]}}))
    with pytest.raises(ConfigError, match=r"training.max_steps"):
        check_training_config(spec_with(base_config=base_config, overrides=["training.max_steps=0"]))
    with pytest.raises(ConfigError, match="does not exist"):
        check_training_config(spec_with(base_config="nope/config.yaml"))
    # A combination the config rejects (batch 4 with 8 accumulation steps) is caught per trial.
    spec = spec_with(base_config=base_config)
    with pytest.raises(ConfigError, match="grad_accum"):
        check_training_config(spec, {"training.batch_size": 4, "training.grad_accum": 8})
    # The sweep's name groups its trials' W&B runs; the sweep's fixed overrides may still change it.
    assert trial_overrides(spec, {"optimizer.lr": 0.0003}) == [f"training.tracking.wandb.group={spec.name}",
                                                               "optimizer.lr=0.0003"]


def test_objectives_from_metrics():
    metrics = {"final.accuracy_spelling": 0.2, "best.accuracy_spelling": 0.4, "validation.tasks.spelling.accuracy": 0.5,
               "validation.tasks.position.accuracy": 0.25, "validation.tasks.count.accuracy": 0.75}
    assert task_accuracies(metrics) == {"spelling": 0.5, "position": 0.25, "count": 0.75}
    assert objective_value("spelling", metrics) == 0.5
    assert objective_value("mean_transfer", metrics) == 0.5
    assert objective_value("mean_transfer", {"spelling_accuracy": 1.0}) is None
    assert intermediate_value("eval_loss", "spelling", {"eval_loss": 2.0}) == -2.0
    assert intermediate_value("accuracy", "spelling", {"eval_loss": 2.0}) is None


def test_pruners():
    import optuna

    assert isinstance(make_pruner(spec_with(pruner={"kind": "asha", "min_resource": 2})),
                      optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner(spec_with(pruner={"kind": "hyperband", "max_resource": 100})),
                      optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(spec_with()), optuna.pruners.NopPruner)


@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path(__file__).resolve().parents[2].glob("configs/sweeps/*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_sweep_specs_are_valid(path, repo_root, monkeypatch):
    from spelltransfer.sweep.spec import load_spec

    monkeypatch.chdir(repo_root)  # specs name paths relative to the repository root
    spec = load_spec(path)
    check_training_config(spec)
    assert spec.trial_count() >= 4


def test_reopened_study_continues_without_replaying_parameters(tmp_path):
    from spelltransfer.sweep.study import open_study, suggest

    spec = spec_with(strategy="random", seed=7)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = suggest(open_study(spec, url).ask(), spec)
    after_restart = suggest(open_study(spec, url).ask(), spec)  # same study, reopened as after a crash
    assert after_restart != first
    other = spec.model_copy(update={"name": "other"})
    assert suggest(open_study(other, url).ask(), other) == first  # a fresh study with the seed is reproducible
    assert len(open_study(spec, url).get_trials()) == 2
