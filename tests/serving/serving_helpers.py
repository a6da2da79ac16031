"""Helpers shared by the serving tests: real small LoRA adapters and the Chromium render check.

The adapters are real PEFT LoRA folders (``save_pretrained``) whose B matrices are seeded random
values instead of PEFT's zeros, so an adapter really changes the model's outputs (a zero-init
adapter would be indistinguishable from the base model and hide a serving bug).

The render check loads the report in an iframe of a probe page that writes, into its own DOM,
how many of the report's images have a non-zero ``naturalWidth``; ``--dump-dom`` prints that
DOM. A screenshot of the report itself must not be blank.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def make_lora_adapter(base_model_path: str, out: Path, r: int = 8, seed: int = 0, b_std: float = 0.02) -> Path:
    """Save a LoRA adapter (q/k/v/o, rank ``r``) with seeded non-zero weights for ``base_model_path``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, b_std)
    model.save_pretrained(out)
    return out


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

PROBE = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="report" src="{report}" width="1400" height="900"></iframe>
<script>
document.getElementById("report").addEventListener("load", function () {{
  var doc = this.contentDocument;
  var images = Array.from(doc.images);
  document.getElementById("result").textContent = JSON.stringify({{
    title: doc.title, tables: doc.querySelectorAll("table").length, images: images.length,
    loaded: images.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length,
    broken: images.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }}).map(function (i) {{ return i.getAttribute("src"); }})
  }});
}});
</script></body></html>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    return path


def assert_renders_with_images(report, min_images: int) -> dict:
    probe = report.parent / ".render_probe.html"
    probe.write_text(PROBE.format(report=report.name))
    try:
        dom = subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, "--allow-file-access-from-files", "--virtual-time-budget=10000",
             "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    finally:
        probe.unlink(missing_ok=True)
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert match, dom[:2000]
    result = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["images"] >= min_images, result
    assert result["loaded"] == result["images"], f"images not loaded: {result['broken']}"
    assert result["tables"] >= 1
    screenshot = report.parent / ".report_screenshot.png"
    subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--screenshot={screenshot}", "--window-size=1400,2000",
                    report.as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)
    screenshot.unlink()
    assert pixels.std() > 0.05, "report screenshot is blank"
    return result
