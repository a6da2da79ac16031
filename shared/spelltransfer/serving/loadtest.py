"""A bounded, headless Locust run against an OpenAI-compatible endpoint, with monitoring.

Locust runs in the serve env (``make serve-env``) over ``services/loadtest/locustfile.py``; this
module prepares the chat-formatted prompts, samples ``/metrics`` and the host while Locust runs,
then turns the per-request records into the summary figures:

request rate, error rate, latency p50/p95/p99, time to first token (TTFT), inter-token latency
(ITL) and output tokens/s. Files (``LABEL`` = the run's label):

- ``OUT/data/LABEL_requests.jsonl``  one line per request (from the locustfile)
- ``OUT/data/LABEL_summary.json``    the figures above (``LoadTestSummary``)
- ``OUT/data/LABEL_monitor.csv``     time series of vLLM metrics and host CPU/memory/GPU
- ``OUT/data/LABEL_stats*.csv``      Locust's own CSVs
- ``OUT/figures/LABEL_*.png``        latency distributions, timeline, monitoring

    spelltransfer serve loadtest --base-url http://127.0.0.1:8000 --model tuned --users 16 --run-time 30
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from spelltransfer.atomic import write_text_atomic
from spelltransfer.errors import ConfigError, SpellTransferError
from spelltransfer.serving.monitor import Monitor, write_samples_csv
from spelltransfer.serving.prompts import study_questions
from spelltransfer.serving.vllm_server import find_serve_python

DEFAULT_OUT = Path("results/deployment")


class LoadTestConfig(BaseModel):
    """One bounded load test; every limit is explicit so a run cannot go on unattended."""

    model_config = ConfigDict(frozen=True)

    base_url: str = Field(pattern=r"^https?://", description="server root, e.g. http://127.0.0.1:8000")
    model: str = Field(min_length=1, description="served model or LoRA adapter name")
    label: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$", description="file prefix; None = model")
    users: int = Field(16, ge=1, le=1024, description="concurrent Locust users")
    spawn_rate: float = Field(16.0, gt=0, description="users started per second")
    run_time_s: int = Field(30, ge=1, le=3600, description="how long users send requests")
    max_tokens: int = Field(16, ge=1, le=4096, description="completion tokens per request")
    n_prompts: int = Field(150, ge=1, le=100_000, description="distinct questions cycled through")
    data_dir: Path | None = Field(None, description="dataset folder; None = questions rebuilt from the task classes")
    split: str = Field("test", description="dataset split to draw questions from")
    prompt_model: str = Field("smollm2-135m", description="tokenizer whose chat template formats prompts")
    out_dir: Path = Field(DEFAULT_OUT, description="results root: data/ and figures/ go under it")
    monitor_interval_s: float = Field(1.0, gt=0, le=60, description="seconds between monitoring samples")
    server_pid: int | None = Field(None, description="vLLM's pid, for its memory in the time series")
    python: str | None = Field(None, description="interpreter with locust; None = the serve env's")

    @property
    def name(self) -> str:
        return self.label or self.model.replace("/", "_")


class Percentiles(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None


class LoadTestSummary(BaseModel):
    """The figures of one run; latencies in milliseconds."""

    label: str
    model: str
    base_url: str
    users: int
    run_time_s: int
    max_tokens: int
    duration_s: float
    requests: int
    failures: int
    error_rate: float
    request_rate: float
    latency_ms: Percentiles
    ttft_ms: Percentiles
    itl_ms: Percentiles
    output_tokens: int
    output_tokens_per_s: float
    errors: dict[str, int]
    monitor_samples: int
    monitor_scrape_errors: int
    peak_cpu_percent: float | None = None
    peak_server_rss_mib: float | None = None
    started_at: float


def locustfile_path() -> Path:
    """``services/loadtest/locustfile.py`` of this checkout."""
    import spelltransfer

    path = Path(spelltransfer.__file__).resolve().parents[2] / "services" / "loadtest" / "locustfile.py"
    if not path.is_file():
        raise ConfigError(f"locustfile not found at {path}")
    return path


def percentiles(values_s: list[float]) -> Percentiles:
    if not values_s:
        return Percentiles(p50=None, p95=None, p99=None, mean=None)
    ms = np.asarray(values_s, dtype=float) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return Percentiles(p50=float(p50), p95=float(p95), p99=float(p99), mean=float(ms.mean()))


def write_prompts(config: LoadTestConfig, path: Path) -> int:
    """Chat-formatted prompts: vLLM's /v1/completions takes the text exactly as the model sees it."""
    from spelltransfer.models import PromptFormat, load_tokenizer

    prompt_format = PromptFormat.from_tokenizer(load_tokenizer(config.prompt_model))
    questions = study_questions(config.n_prompts, data_dir=config.data_dir, split=config.split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for question in questions:
            handle.write(json.dumps({"task": question["task"], "prompt": prompt_format.prompt(question["prompt"]),
                                     "answer": question["answer"]}) + "\n")
    return len(questions)


def read_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(config: LoadTestConfig, records: list[dict], samples: list[dict], scrape_errors: int,
              started_at: float) -> LoadTestSummary:
    """Figures from per-request records; the rate is over the span requests actually covered."""
    ok = [r for r in records if r["ok"]]
    if records:
        first = min(r["t_start"] for r in records)
        last = max(r["t_start"] + (r["latency_s"] or 0.0) for r in records)
        duration = max(last - first, 1e-9)
    else:
        duration = float(config.run_time_s)
    errors: dict[str, int] = {}
    for record in records:
        if not record["ok"]:
            key = (record.get("error") or "unknown")[:120]
            errors[key] = errors.get(key, 0) + 1
    output_tokens = sum(int(r.get("output_tokens") or 0) for r in ok)
    cpu = [s["cpu_percent"] for s in samples if "cpu_percent" in s]
    rss = [s["server_rss_mib"] for s in samples if "server_rss_mib" in s]
    return LoadTestSummary(
        label=config.name, model=config.model, base_url=config.base_url, users=config.users,
        run_time_s=config.run_time_s, max_tokens=config.max_tokens, duration_s=duration,
        requests=len(records), failures=len(records) - len(ok),
        error_rate=(len(records) - len(ok)) / len(records) if records else 0.0,
        request_rate=len(ok) / duration,
        latency_ms=percentiles([r["latency_s"] for r in ok]),
        ttft_ms=percentiles([r["ttft_s"] for r in ok if r["ttft_s"] is not None]),
        itl_ms=percentiles([gap for r in ok for gap in r["itl_s"]]),
        output_tokens=output_tokens, output_tokens_per_s=output_tokens / duration, errors=errors,
        monitor_samples=len(samples), monitor_scrape_errors=scrape_errors,
        peak_cpu_percent=max(cpu) if cpu else None, peak_server_rss_mib=max(rss) if rss else None,
        started_at=started_at,
    )


def run_load_test(config: LoadTestConfig, plots: bool = True) -> LoadTestSummary:
    """Run Locust headless for ``run_time_s`` while monitoring; write data and figures; return the summary."""
    import requests

    data_dir = config.out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    name = config.name
    try:
        requests.get(config.base_url.rstrip("/") + "/v1/models", timeout=5).raise_for_status()
    except requests.RequestException as error:
        raise SpellTransferError(f"--base-url {config.base_url}: server not answering /v1/models ({error})") from error
    prompts_path = data_dir / f"{name}_prompts.jsonl"
    records_path = data_dir / f"{name}_requests.jsonl"
    records_path.unlink(missing_ok=True)
    write_prompts(config, prompts_path)
    python = config.python or find_serve_python()
    command = [
        python, "-m", "locust", "-f", str(locustfile_path()), "--headless",
        "--host", config.base_url.rstrip("/"), "--users", str(config.users),
        "--spawn-rate", f"{config.spawn_rate:g}", "--run-time", f"{config.run_time_s}s",
        # Let in-flight requests finish at the end instead of cutting streams mid-way.
        "--stop-timeout", "60", "--csv", str(data_dir / f"{name}"), "--only-summary",
        "--exit-code-on-error", "0",
    ]
    env = dict(os.environ, LOADTEST_PROMPTS=str(prompts_path), LOADTEST_RECORDS=str(records_path),
               LOADTEST_MODEL=config.model, LOADTEST_MAX_TOKENS=str(config.max_tokens))
    env.pop("PYTHONPATH", None)
    started_at = time.time()
    monitor = Monitor(config.base_url.rstrip("/") + "/metrics", config.server_pid, config.monitor_interval_s)
    log_path = data_dir / f"{name}_locust.log"
    with monitor, open(log_path, "w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   timeout=config.run_time_s + 180)
    if completed.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise SpellTransferError(f"locust exited with code {completed.returncode}; log {log_path}:\n{tail}")
    write_samples_csv(monitor.samples, data_dir / f"{name}_monitor.csv")
    records = read_records(records_path)
    summary = summarize(config, records, monitor.samples, monitor.scrape_errors, started_at)
    write_text_atomic(data_dir / f"{name}_summary.json", summary.model_dump_json(indent=2), fsync=False)
    if plots:
        from spelltransfer.serving.plots import plot_load_test

        plot_load_test(summary, records, monitor.samples, config.out_dir / "figures")
    return summary
