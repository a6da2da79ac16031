"""Sample vLLM's Prometheus ``/metrics`` and the host's CPU/memory/GPU into a time series.

A background thread takes one sample per interval while a load test runs; each sample is a flat
dict (one CSV row), so the figures and the report read it without knowing where it came from.
Counters (tokens, requests) are stored as totals; rates are derived when plotting.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from spelltransfer.atomic import open_atomic

# vLLM metric -> column. Gauges are summed over label sets (one per model/engine).
VLLM_METRICS = {
    "vllm:num_requests_running": "vllm_running",
    "vllm:num_requests_waiting": "vllm_waiting",
    "vllm:kv_cache_usage_perc": "vllm_kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "vllm_kv_cache_usage",  # older vLLM name of the same gauge
    "vllm:prompt_tokens": "vllm_prompt_tokens_total",
    "vllm:generation_tokens": "vllm_generation_tokens_total",
    "vllm:request_success": "vllm_requests_success_total",
}


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """The columns of ``VLLM_METRICS`` from a Prometheus exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        column = VLLM_METRICS.get(family.name)
        if column is None:
            continue
        for sample in family.samples:
            # Counters expose name_total (and name_created); keep only the running totals.
            if sample.name.endswith("_created"):
                continue
            values[column] = values.get(column, 0.0) + float(sample.value)
    return values


def gpu_sample() -> dict[str, float]:
    """GPU utilisation and memory from ``nvidia-smi``; empty where there is no NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    rows = [line.split(",") for line in out.strip().splitlines() if line.strip()]
    if not rows:
        return {}
    return {"gpu_util_percent": sum(float(r[0]) for r in rows) / len(rows),
            "gpu_memory_used_mib": sum(float(r[1]) for r in rows)}


def process_tree_rss_mib(pid: int | None) -> float | None:
    """Resident memory of a process and its children (vLLM's API server + engine core)."""
    import psutil

    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


class Monitor:
    """Samples every ``interval_s`` in a daemon thread between ``start()`` and ``stop()``."""

    def __init__(self, metrics_url: str | None, server_pid: int | None = None, interval_s: float = 1.0):
        self.metrics_url = metrics_url
        self.server_pid = server_pid
        self.interval_s = interval_s
        self.samples: list[dict] = []
        self.scrape_errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def sample(self) -> dict:
        import psutil
        import requests

        memory = psutil.virtual_memory()
        row: dict = {"t": time.time(), "elapsed_s": time.time() - self._t0,
                     "cpu_percent": psutil.cpu_percent(interval=None),
                     "mem_used_mib": (memory.total - memory.available) / 2**20,
                     "load_1m": os.getloadavg()[0]}
        rss = process_tree_rss_mib(self.server_pid)
        if rss is not None:
            row["server_rss_mib"] = rss
        row.update(gpu_sample())
        if self.metrics_url:
            try:
                response = requests.get(self.metrics_url, timeout=2)
                response.raise_for_status()
                row.update(parse_vllm_metrics(response.text))
            except (requests.RequestException, ValueError):
                self.scrape_errors += 1
        return row

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append(self.sample())
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> "Monitor":
        import psutil

        psutil.cpu_percent(interval=None)  # primes the counter; the first real reading is per interval
        self._t0 = time.time()
        self._thread = threading.Thread(target=self._run, name="serving-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[dict]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.samples

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def write_samples_csv(samples: list[dict], path: Path) -> Path:
    """All samples as one CSV (union of columns), written atomically."""
    columns: list[str] = []
    for sample in samples:
        columns += [key for key in sample if key not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_atomic(path, "w", fsync=False, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(samples)
    return path
