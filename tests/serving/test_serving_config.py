"""Server/load-test configuration, metric parsing and the summary arithmetic (no server needed)."""

from __future__ import annotations

import pytest

from spelltransfer.errors import ConfigError
from spelltransfer.serving.loadtest import LoadTestConfig, summarize
from spelltransfer.serving.monitor import Monitor, parse_vllm_metrics
from spelltransfer.serving.vllm_server import AdapterSpec, InferenceServerConfig, build_command


def test_adapter_spec_parses_name_and_path(tiny_adapter):
    spec = AdapterSpec.parse(f"tuned={tiny_adapter}")
    assert spec.name == "tuned" and spec.rank == 4
    with pytest.raises(ConfigError, match="expected NAME=PATH"):
        AdapterSpec.parse(str(tiny_adapter))
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        AdapterSpec.parse("tuned=/nonexistent/folder")


def test_server_config_rejects_duplicate_names_and_builds_lora_flags(tiny_adapter):
    with pytest.raises(ValueError, match="repeated: \\['base'\\]"):
        InferenceServerConfig(adapters=(AdapterSpec(name="base", path=tiny_adapter),))
    config = InferenceServerConfig(adapters=(AdapterSpec(name="a", path=tiny_adapter),
                                             AdapterSpec(name="b", path=tiny_adapter)))
    assert config.max_lora_rank == 8  # rank 4 rounds up to vLLM's smallest allowed above it
    command = build_command(config, "/models/m", 8123, "python")
    assert command[command.index("--lora-modules") + 1:] == [f"a={tiny_adapter}", f"b={tiny_adapter}"]
    assert command[command.index("--max-loras") + 1] == "2"
    assert "--enable-lora" not in build_command(InferenceServerConfig(), "/models/m", 8123, "python")


def test_load_test_config_bounds():
    with pytest.raises(ValueError, match="run_time_s"):
        LoadTestConfig(base_url="http://127.0.0.1:1", model="base", run_time_s=0)
    with pytest.raises(ValueError, match="base_url"):
        LoadTestConfig(base_url="127.0.0.1:8000", model="base")


METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="base"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="base"} 1.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="base"} 1234.0
vllm:generation_tokens_created{engine="0",model_name="base"} 1.7e9
# HELP vllm:kv_cache_usage_perc KV-cache usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="base"} 0.25
"""


def test_parse_vllm_metrics_keeps_totals_not_created_stamps():
    assert parse_vllm_metrics(METRICS) == {"vllm_running": 3.0, "vllm_waiting": 1.0,
                                           "vllm_generation_tokens_total": 1234.0, "vllm_kv_cache_usage": 0.25}


def test_monitor_samples_the_host_and_counts_scrape_errors():
    import os
    import time

    with Monitor("http://127.0.0.1:9/metrics", server_pid=os.getpid(), interval_s=0.2) as monitor:
        time.sleep(0.7)
    assert len(monitor.samples) >= 2
    assert monitor.scrape_errors == len(monitor.samples)  # nothing listens on port 9
    assert 0 <= monitor.samples[-1]["cpu_percent"] <= 100 and monitor.samples[-1]["server_rss_mib"] > 10


def test_summary_figures_from_records():
    config = LoadTestConfig(base_url="http://127.0.0.1:1", model="base")
    records = [{"t_start": 100.0 + i, "ok": i != 3, "error": None if i != 3 else "HTTP 500: boom",
                "ttft_s": 0.1, "latency_s": 0.5 + 0.1 * i, "itl_s": [0.02] * 15, "output_tokens": 16}
               for i in range(10)]
    summary = summarize(config, records, [], 0, 0.0)
    assert summary.requests == 10 and summary.failures == 1 and summary.error_rate == pytest.approx(0.1)
    assert summary.duration_s == pytest.approx(9 + 1.4)  # first start -> last end
    assert summary.request_rate == pytest.approx(9 / 10.4)
    assert summary.output_tokens_per_s == pytest.approx(9 * 16 / 10.4)
    assert summary.ttft_ms.p50 == pytest.approx(100.0) and summary.itl_ms.p99 == pytest.approx(20.0)
    assert summary.errors == {"HTTP 500: boom": 1}


def test_adapter_rank_is_the_real_rank(tmp_path):
    """vLLM's --max-lora-rank follows the adapter's own r (and per-module ranks); no silent r = 8."""
    import json

    def adapter(name, config):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps(config))
        return AdapterSpec(name=name, path=folder)

    assert InferenceServerConfig(adapters=(adapter("big", {"r": 64}),)).max_lora_rank == 64
    assert adapter("mixed", {"r": 16, "rank_pattern": {"q_proj": 100}}).rank == 100
    assert InferenceServerConfig(adapters=(adapter("odd", {"r": 24}),)).max_lora_rank == 32
    with pytest.raises(ConfigError, match="no readable LoRA rank 'r'"):
        adapter("norank", {"lora_alpha": 16}).rank
