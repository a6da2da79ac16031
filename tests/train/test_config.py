"""The five YAML files load, validate and override; every error names the field."""

from __future__ import annotations

import pytest
import yaml

from spelltransfer.errors import ConfigError
from spelltransfer.train import load_training_config
from spelltransfer.train.model_config import LoraSettings, resolve_target_modules


def test_repo_configs_load_with_all_sections(repo_root):
    config = load_training_config(repo_root / "configs/training/config.yaml")
    assert config.model.name == "smollm2-135m"
    assert config.scheduler.name in ("linear", "cosine", "constant")
    assert config.transfer.mix_position_fraction == 0.0 and config.transfer.mix_count_fraction == 0.0
    assert config.training.tracking.wandb.project == "llm-spelling-finetuning"


def test_override_is_type_checked_and_applied(repo_root):
    config = load_training_config(repo_root / "configs/training/config.yaml",
                                  ["training.max_steps=7", "optimizer.lr=3e-4", "model.lora.target_modules=[q_proj, v_proj]"])
    assert config.training.max_steps == 7
    assert config.optimizer.lr == pytest.approx(3e-4)
    assert config.model.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("override, message", [
    ("training.max_steps=0", "training.max_steps: must be >= 1 (got 0)"),
    ("optimizer.lr=abc", "optimizer.lr: input should be a valid number"),
    ("scheduler.name=step", "scheduler.name: must be one of 'linear', 'cosine' or 'constant' (got 'step')"),
    ("model.lora.r=0", "model.lora.r: must be >= 1 (got 0)"),
    ("training.early_stopping.patience=0", "training.early_stopping.patience: must be >= 1 (got 0)"),
    ("transfer.mix_count_fraction=1.5", "transfer.mix_count_fraction: must be < 1.0 (got 1.5)"),
])
def test_bad_values_name_the_field(repo_root, override, message):
    with pytest.raises(ConfigError) as error:
        load_training_config(repo_root / "configs/training/config.yaml", [override])
    assert message in str(error.value)


@pytest.mark.parametrize("override, message", [
    ("training.max_stepz=3", "unknown key 'max_stepz' in training"),
    ("model.lora.rank=8", "unknown key 'rank' in model.lora"),
    ("max_steps=3", "keys start with a section"),
    ("training.max_steps", "expected key=value"),
])
def test_unknown_override_keys_are_rejected_by_name(repo_root, override, message):
    with pytest.raises(ConfigError, match="") as error:
        load_training_config(repo_root / "configs/training/config.yaml", [override])
    assert message in str(error.value)


def test_unknown_key_in_a_yaml_file_is_rejected(tmp_path, repo_root):
    (tmp_path / "optimizer.yaml").write_text("lr: 0.001\nmomentum: 0.9\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"max_steps": 3, "configs": {"optimizer": "optimizer.yaml"}}))
    with pytest.raises(ConfigError) as error:
        load_training_config(tmp_path / "config.yaml")
    assert "optimizer.momentum: unknown key" in str(error.value)


def test_cross_field_rule_and_broken_yaml(tmp_path):
    (tmp_path / "config.yaml").write_text("batch_size: 6\ngrad_accum: 4\n")
    with pytest.raises(ConfigError, match="batch_size \\(6\\) must be divisible by grad_accum \\(4\\)"):
        load_training_config(tmp_path / "config.yaml")
    (tmp_path / "bad.yaml").write_text("max_steps: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml:\\d+: not valid YAML"):
        load_training_config(tmp_path / "bad.yaml")


def test_resolved_config_round_trips(tmp_path, repo_root):
    config = load_training_config(repo_root / "configs/training/config.yaml", ["training.seed=9"])
    (tmp_path / "resolved.yaml").write_text(config.to_yaml())
    assert load_training_config(tmp_path / "resolved.yaml") == config


def test_auto_target_modules_per_architecture(tmp_path, tiny_model_path):
    assert resolve_target_modules(tiny_model_path, LoraSettings()) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    assert resolve_target_modules(str(tmp_path), LoraSettings()) == ["c_attn", "c_proj", "c_fc"]
    (tmp_path / "config.json").write_text('{"model_type": "mamba"}')
    with pytest.raises(ConfigError, match="model.lora.target_modules: auto does not know architecture 'mamba'"):
        resolve_target_modules(str(tmp_path), LoraSettings())
