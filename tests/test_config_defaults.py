"""Every shipped YAML under configs/ agrees with the pydantic defaults, or says on the line that it
overrides one (``key: value  # override: why``; the convention is documented once, in
``spelltransfer/train/config.py``). The pydantic fields own every default; a YAML that drifts from
them without saying so fails here, naming the file, the field and both values. (A sweep's
``overrides:`` list is the training-config ``--set`` strings every trial gets: overrides by definition.)

Also: the packed trainer's ``TrialSpec`` is a view of the same fields (no defaults or bounds of its own).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from spelltransfer.safe_yaml import load_yaml_file
from spelltransfer.sweep.spec import SweepSpec
from spelltransfer.train.config import SECTIONS, RunConfig, TrainingConfig, load_training_config
from spelltransfer.train.packed.trials import TRIAL_FIELDS, TrialSpec, _run_config_field

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
OVERRIDE = re.compile(r"#\s*override\b")


def _key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Dotted key path -> line of its key, for every key of a YAML mapping tree."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (str(key.value),)
            lines[path] = key.start_mark.line
            lines.update(_key_lines(value, path))
    return lines


def _model_for(path: Path) -> tuple[type[BaseModel], dict]:
    """The pydantic model a shipped YAML maps onto, and the data it validates (training files by
    the section their config.yaml names them under; a resolved config by its sections)."""
    data = load_yaml_file(path) or {}
    if path.parent.name == "sweeps":
        return SweepSpec, data
    if "training" in data:   # a resolved config (recipe.yaml): every section inline
        return RunConfig, data
    if "configs" in data:    # the top-level training config; its section files are checked on their own
        return TrainingConfig, {k: v for k, v in data.items() if k != "configs"}
    for top in CONFIGS.glob("training/*.yaml"):
        sections = (load_yaml_file(top) or {}).get("configs") or {}
        for section, relative in sections.items():
            if (top.parent / relative).resolve() == path.resolve():
                return RunConfig.model_fields[section].annotation, data
    raise AssertionError(f"{path.relative_to(ROOT)}: no pydantic model known for it; map it in _model_for")


def _differences(model: type[BaseModel], data: dict, prefix: tuple[str, ...] = ()):
    """(key path, YAML value, default) of each field the YAML sets to something else than the default."""
    instance = model.model_validate(data)
    for name, field in model.model_fields.items():
        if name not in data or field.is_required():
            continue
        value, path = data[name], prefix + (name,)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
            yield from _differences(annotation, value, path)
            continue
        default = field.get_default(call_default_factory=True)
        if getattr(instance, name) != default:
            yield path, getattr(instance, name), default


SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


def test_configs_are_found():
    assert len(SHIPPED) >= 10, SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_yaml_restates_defaults_or_marks_overrides(path):
    model, data = _model_for(path)
    text = path.read_text()
    lines = text.splitlines()
    key_lines = _key_lines(yaml.compose(text))
    unmarked = []
    for key_path, value, default in _differences(model, data):
        line = lines[key_lines[key_path]]
        if not OVERRIDE.search(line):
            unmarked.append(f"{'.'.join(key_path)} = {value!r} (default {default!r})")
    assert not unmarked, (f"{path.relative_to(ROOT)} differs from the pydantic defaults without '# override' "
                          f"on the line: {'; '.join(unmarked)} -- change the default or mark the override")


def test_override_marks_are_not_stale():
    """A '# override' comment on a line that restates the default is a stale claim."""
    stale = []
    for path in SHIPPED:
        model, data = _model_for(path)
        text = path.read_text()
        lines = text.splitlines()
        differing = {key_path for key_path, _, _ in _differences(model, data)}
        for key_path, line in _key_lines(yaml.compose(text)).items():
            if OVERRIDE.search(lines[line]) and key_path not in differing:
                stale.append(f"{path.relative_to(ROOT)}: {'.'.join(key_path)}")
    assert not stale, f"'# override' on a value equal to the default: {stale}"


def test_shipped_training_configs_load():
    for name in ("config.yaml", "recipe.yaml"):
        load_training_config(CONFIGS / "training" / name)
    assert set(SECTIONS) == set(RunConfig.model_fields)


def test_trial_spec_is_a_view_of_the_run_config():
    """Each TrialSpec field has the RunConfig field's default, bounds and type; a default RunConfig
    gives the default TrialSpec."""
    for dotted, name in TRIAL_FIELDS.items():
        owner, field = _run_config_field(dotted), TrialSpec.model_fields[name]
        assert field.annotation == owner.annotation, dotted
        assert field.default == owner.default, dotted
        assert field.metadata == owner.metadata, dotted
    assert set(TrialSpec.model_fields) == {"trial_id", *TRIAL_FIELDS.values()}
    assert TrialSpec.from_config(RunConfig(), "t") == TrialSpec(trial_id="t")
    with pytest.raises(ValueError, match="less than or equal to 1024"):
        TrialSpec(trial_id="t", r=1025)
    assert TrialSpec(trial_id="t", r=1024).r == 1024
