"""The HTML report opens in headless Chromium (Debian ``chromium``) with every image loaded."""

from __future__ import annotations

import json
import time

import pytest
from serving_helpers import assert_renders_with_images

def _records(n: int = 40, failures: int = 0):
    t0 = time.time()
    return [{"t_start": t0 + i * 0.1, "task": "spelling", "ok": i >= failures, "status": 200, "error": None if i >= failures else "HTTP 500",
             "ttft_s": 0.05 + 0.001 * i, "latency_s": 0.3 + 0.01 * i, "itl_s": [0.015, 0.02, 0.018], "output_tokens": 16}
            for i in range(n)]


def _samples(n: int = 10):
    return [{"t": i, "elapsed_s": float(i), "cpu_percent": 50.0 + i, "mem_used_mib": 4000.0, "server_rss_mib": 4600.0,
             "vllm_running": 3.0, "vllm_waiting": 0.0, "vllm_generation_tokens_total": 100.0 * i} for i in range(n)]


def test_report_with_load_figures_renders_in_chromium(tmp_path):
    from spelltransfer.serving.loadtest import LoadTestConfig, summarize
    from spelltransfer.serving.plots import plot_load_test
    from spelltransfer.serving.report import build_report

    for label in ("base", "tuned"):
        config = LoadTestConfig(base_url="http://127.0.0.1:1", model=label, out_dir=tmp_path)
        records, samples = _records(), _samples()
        summary = summarize(config, records, samples, 0, time.time())
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / f"{label}_summary.json").write_text(summary.model_dump_json())
        plot_load_test(summary, records, samples, tmp_path / "figures")
    eval_file = tmp_path / "tuned_eval.json"
    eval_file.write_text(json.dumps({"tasks": {"spelling": {"accuracy": 0.8, "ci95": [0.7, 0.9], "n": 100}}}))
    report = build_report(tmp_path, {"tuned": eval_file})
    text = report.read_text()
    assert "80.0 %" in text and "[70.0, 90.0]" in text
    result = assert_renders_with_images(report, min_images=7)  # comparison + 3 per run
    assert result["title"] == "spelltransfer deployment report"


def test_report_names_a_missing_image(tmp_path):
    """The probe must be able to fail: a report whose figure is gone is caught."""
    from spelltransfer.serving.loadtest import LoadTestConfig, summarize
    from spelltransfer.serving.plots import plot_load_test
    from spelltransfer.serving.report import build_report

    config = LoadTestConfig(base_url="http://127.0.0.1:1", model="base", out_dir=tmp_path)
    summary = summarize(config, _records(), _samples(), 0, time.time())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "base_summary.json").write_text(summary.model_dump_json())
    plot_load_test(summary, _records(), _samples(), tmp_path / "figures")
    report = build_report(tmp_path)
    report.write_text(report.read_text().replace("base_latency.png", "gone.png"))
    with pytest.raises(AssertionError, match="gone.png"):
        assert_renders_with_images(report, min_images=4)
