"""Export on the tiny model: the merged model loads with plain transformers and matches PEFT."""

from __future__ import annotations

import json

import pytest

from spelltransfer.errors import ConfigError, DataError
from spelltransfer.serving.export import ExportConfig, export_model


@pytest.fixture()
def eval_file(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"tasks": {"spelling": {"accuracy": 0.625, "ci95": [0.5, 0.74], "n": 64},
                                          "count": {"accuracy": 0.3, "n": 64}}}))
    return path


def test_export_writes_adapter_and_merged_model_with_cards(tmp_path, tiny_model_path, tiny_adapter, eval_file):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = export_model(ExportConfig(adapter=tiny_adapter, name="tiny", base_model=tiny_model_path,
                                       out_dir=tmp_path / "models", evals={"tuned": eval_file}))
    assert result.root == tmp_path / "models" / "tiny"
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert (result.merged_dir / "model.safetensors").is_file()
    assert (result.merged_dir / "tokenizer.json").is_file()
    for folder in (result.adapter_dir, result.merged_dir):
        card = (folder / "README.md").read_text()
        assert "62.5 % [50.0, 74.0] (n=64)" in card and "30.0 %" in card
    assert "library_name: peft" in (result.adapter_dir / "README.md").read_text()
    # No staging folder is left behind.
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny"]

    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), str(tiny_adapter))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    ids = torch.tensor([[1, 5, 42, 7, 99, 3]])
    with torch.no_grad():
        merged_logits = merged(ids).logits
        peft_logits = reference(ids).logits
        base_logits = base(ids).logits
    assert torch.allclose(merged_logits, peft_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)  # the adapter really is in there


def test_export_refuses_to_overwrite_and_checks_eval_files(tmp_path, tiny_model_path, tiny_adapter):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--overwrite"):
        export_model(ExportConfig(adapter=tiny_adapter, name="tiny", base_model=tiny_model_path,
                                  out_dir=tmp_path / "models"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"tasks": {"spelling": {"n": 3}}}')
    with pytest.raises(DataError, match="tasks.spelling has no 'accuracy'"):
        export_model(ExportConfig(adapter=tiny_adapter, name="other", base_model=tiny_model_path,
                                  out_dir=tmp_path / "models", evals={"tuned": bad}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"tasks":\n  {oops}')
    with pytest.raises(DataError, match="broken.json:2"):
        export_model(ExportConfig(adapter=tiny_adapter, name="other", base_model=tiny_model_path,
                                  out_dir=tmp_path / "models", evals={"tuned": broken}))
    assert not (tmp_path / "models" / "other").exists()


def test_export_config_names_a_folder_without_an_adapter(tmp_path):
    with pytest.raises(ValueError, match="no adapter_config.json"):
        ExportConfig(adapter=tmp_path)


def test_run_folder_resolves_to_its_final_adapter(tmp_path, tiny_adapter):
    import shutil

    run = tmp_path / "run-7"
    shutil.copytree(tiny_adapter, run / "final")
    config = ExportConfig(adapter=run)
    assert config.adapter == (run / "final").resolve()
    assert config.export_name == "run-7"


def test_export_cli_reports_bad_input_without_traceback(tmp_path):
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", "spelltransfer.cli", "export", str(tmp_path)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "adapter" in completed.stderr and "adapter_config.json" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_gguf_export_loads_back_with_transformers(tmp_path, tiny_model_path, tiny_adapter):
    import torch
    from transformers import AutoModelForCausalLM

    result = export_model(ExportConfig(adapter=tiny_adapter, name="tiny", base_model=tiny_model_path,
                                       out_dir=tmp_path, gguf=True))
    assert result.gguf_file.is_file() and "library_name: gguf" in (result.gguf_file.parent / "README.md").read_text()
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir, dtype=torch.float32)
    reloaded = AutoModelForCausalLM.from_pretrained(result.gguf_file.parent, gguf_file=result.gguf_file.name,
                                                    dtype=torch.float32)
    ids = torch.tensor([[1, 5, 42, 7, 99, 3, 500, 2000]])
    with torch.no_grad():
        expected, got = merged(ids).logits, reloaded(ids).logits
    # F16 storage of the matrices: small absolute error, same greedy tokens. A wrong Q/K
    # permutation or tensor mapping gives errors of order 1 and different tokens.
    assert (expected - got).abs().max().item() < 0.05
    assert torch.equal(expected.argmax(-1), got.argmax(-1))
