"""Issue 17, the package side: YAML, config and data-file input that must fail fast and say little.

- a ~600-byte YAML alias bomb (a training config or a sweep spec) is refused at once, in bounded
  memory (run in a child process with a time and memory limit, so a regression fails, not hangs);
- a duplicated key and a non-standard tag are refused, naming the key / tag and the line;
- a config error never echoes a file's content or a value whole (names the field and the file);
- ``max_steps: true`` and ``max_steps: "100"`` are refused (bools and strings are not numbers),
  while ``--set training.max_steps=100`` and ``--set optimizer.lr=1e-4`` still work;
- a huge line in an eval JSONL, or a huge file, is refused fast naming the limit.

Only public entry points (``load_training_config``, ``parse_spec``, ``load_external``) are used, so
each test also runs - and fails - against the code before the fix. Nothing loads a model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import spelltransfer
from spelltransfer.data.io import load_external
from spelltransfer.errors import ConfigError, DataError
from spelltransfer.sweep.spec import parse_spec
from spelltransfer.train.config import load_training_config

CHILD_TIMEOUT_S = 20          # a refused bomb takes well under a second
CHILD_MEMORY_BYTES = 2 << 30  # address space of the child: the old code grew to 4.9 GB

SHADOW_SECRET = "s3cr3tHASHd0notECHO"


def _bomb(line: str = "l{level}: {node}") -> list[str]:
    """The billion-laughs YAML: nine levels of nine aliases each (9**9 'lol's), as nine ``line``s."""
    names = "abcdefghi"
    nodes = ["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    nodes += [f"&{names[level]} [" + ", ".join([f"*{names[level - 1]}"] * 9) + "]" for level in range(1, 9)]
    return [line.format(level=level, node=node) for level, node in enumerate(nodes)]


def _run_limited(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python with this test's spelltransfer, a memory cap and a timeout."""
    package_root = str(Path(spelltransfer.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    prelude = textwrap.dedent(f"""\
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({CHILD_MEMORY_BYTES}, {CHILD_MEMORY_BYTES}))
    """)
    try:
        return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {CHILD_TIMEOUT_S} s: the YAML alias bomb was not refused")


def _refusal_in_child(imports: str, call: str, error: str) -> str:
    """Run ``call`` in a limited child (``_run_limited``); its stdout: ``REFUSED <message>`` or ``ACCEPTED``."""
    body = textwrap.indent(textwrap.dedent(call).strip(), "    ")
    done = _run_limited(f"from spelltransfer.errors import {error}\n{imports}\ntry:\n{body}\n"
                        f"except {error} as error:\n    print('REFUSED', str(error)[:2000])\nelse:\n    print('ACCEPTED')\n")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_alias_bomb_in_a_training_config_is_refused_fast(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(_bomb() + ["max_steps: *i"]) + "\n")
    assert len(path.read_bytes()) < 700
    out = _refusal_in_child("from spelltransfer.train.config import load_training_config",
                            f"load_training_config({str(path)!r})", "ConfigError")
    assert out.startswith("REFUSED"), out[:500]
    assert "bomb.yaml" in out and "limit" in out and len(out) < 1000


def test_alias_bomb_in_a_sweep_spec_is_refused_fast():
    # Valid for the spec's schema: each level is a categorical parameter's values (list[Any]).
    spec = "\n".join(["name: bomb", "parameters:", *_bomb("  x.l{level}: {{values: {node}}}"),
                      "  optimizer.lr: {values: *i}"]) + "\n"
    assert len(spec) < 700
    # model_dump() is what the controller does with an accepted spec (it grew to 4.9 GB)
    out = _refusal_in_child("from spelltransfer.sweep.spec import parse_spec",
                            f"parse_spec({spec!r}, 'bomb-spec.yaml').model_dump()", "ConfigError")
    assert out.startswith("REFUSED"), out[:500]
    assert "bomb-spec.yaml" in out and "limit" in out


@pytest.mark.parametrize("text, key", [
    ("max_steps: 5\nbatch_size: 4\nmax_steps: 500\n", "max_steps"),
    ("seed: 1\ntracking:\n  wandb:\n    enabled: false\n    project: a\n    enabled: true\n", "enabled"),
])
def test_duplicate_key_in_a_config_is_refused_naming_it(tmp_path, text, key):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_training_config(path)
    message = str(error.value)
    assert "duplicate key" in message and key in message and f"{path}:" in message


def test_duplicate_key_in_a_spec_is_refused():
    with pytest.raises(ConfigError, match=r"spec.yaml:4: duplicate key max_trials"):
        parse_spec("name: s\nmax_trials: 2\nparameters: {optimizer.lr: {values: [0.001]}}\nmax_trials: 200\n",
                   "spec.yaml")


@pytest.mark.parametrize("text, tag, line", [
    # Both were accepted before: bytes read as the string "hello", a set as the list of modules.
    ("max_steps: 5\nrun_name: !!binary aGVsbG8=\n", "binary", 2),
    ("training: {max_steps: 5}\nmodel:\n  lora: {target_modules: !!set {q_proj: null, v_proj: null}}\n", "set", 3),
])
def test_non_standard_tag_is_refused(tmp_path, text, tag, line):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_training_config(path)
    message = str(error.value)
    assert f"tag:yaml.org,2002:{tag}" in message and "not allowed" in message and f"{path}:{line}" in message


@pytest.mark.parametrize("value", ["!!python/object/apply:os.getcwd []", "!custom hello", "!!timestamp 2024-01-01"])
def test_other_tags_stay_refused(tmp_path, value):
    """A guard, not a new case: these were refused before too (by SafeLoader or by pydantic)."""
    path = tmp_path / "config.yaml"
    path.write_text(f"max_steps: 5\nrun_name: {value}\n")
    with pytest.raises(ConfigError, match="tag .* is not allowed"):
        load_training_config(path)


def test_a_file_read_as_config_is_not_echoed(tmp_path):
    """/etc/shadow read as YAML is a mapping whose keys are its lines; the error must not show them."""
    path = tmp_path / "shadow"
    path.write_text(f"root:$6${SHADOW_SECRET}$Zx9:20228:0:99999:7:::\n"
                    f"daemon:*:20228:0:99999:7:::\nsvc:{SHADOW_SECRET}:20228:0:99999:7:::\n")
    with pytest.raises(ConfigError) as error:
        load_training_config(path)
    message = str(error.value)
    assert SHADOW_SECRET not in message and "20228" not in message
    assert str(path) in message and "unknown key" in message


def test_a_long_value_is_cut_in_the_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"experiment: '{'A' * 300} {SHADOW_SECRET}'\n")
    with pytest.raises(ConfigError) as error:
        load_training_config(path)
    message = str(error.value)
    assert "training.experiment" in message and str(path) in message
    assert SHADOW_SECRET not in message and len(message) < len(str(path)) + 300


@pytest.mark.parametrize("line, field", [
    ("max_steps: true", "training.max_steps"),
    ("max_steps: '100'", "training.max_steps"),
    ("batch_size: 8.0", "training.batch_size"),
    ("early_stopping: {enabled: 1}", "training.early_stopping.enabled"),
])
def test_bools_and_strings_are_not_numbers(tmp_path, line, field):
    path = tmp_path / "config.yaml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=rf"{field}: input should be a valid"):
        load_training_config(path)


def test_overrides_still_parse_as_numbers(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("max_steps: 5\n")
    config = load_training_config(path, ["training.max_steps=100", "optimizer.lr=1e-4", "optimizer.eps=1",
                                         "training.early_stopping.enabled=false"])
    assert config.training.max_steps == 100 and isinstance(config.training.max_steps, int)
    assert config.optimizer.lr == pytest.approx(1e-4) and config.optimizer.eps == 1.0
    assert config.training.early_stopping.enabled is False
    with pytest.raises(ConfigError, match="training.max_steps: input should be a valid integer"):
        load_training_config(path, ["training.max_steps=true"])


GOOD = {"prompt": "Spell the word 'apple'.", "answer": "a p p l e", "task": "spelling"}


def test_a_huge_line_in_an_eval_file_is_refused_naming_the_limit(tmp_path):
    path = tmp_path / "eval.jsonl"
    with open(path, "w") as handle:
        handle.write(json.dumps(GOOD) + "\n")
        handle.write(json.dumps({**GOOD, "prompt": "x" * (3 << 20)}) + "\n")   # a valid example, 3 MiB long
    with pytest.raises(DataError) as error:
        load_external(path)
    message = str(error.value)
    assert f"{path}:2" in message and "limit" in message and "MiB" in message and len(message) < 300


def test_a_huge_eval_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "eval.jsonl"
    with open(path, "wb") as handle:
        handle.write((json.dumps(GOOD) + "\n").encode())
        handle.truncate(600 << 20)   # sparse: 600 MiB on paper, nothing on disk
    out = _refusal_in_child("from spelltransfer.data.io import load_external", f"load_external({str(path)!r})", "DataError")
    assert out.startswith("REFUSED") and "limit" in out and "MiB" in out, out[:500]
