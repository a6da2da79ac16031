"""Figures of a load test: latency distributions, a timeline, the monitoring series, comparisons.

Each function writes one PNG atomically and returns its path; matplotlib runs headless (Agg).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spelltransfer.atomic import open_atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_atomic(path, "wb", fsync=False) as handle:
        fig.savefig(handle, dpi=100, bbox_inches="tight", format="png")
        _pyplot().close(fig)
    return path


def plot_latency(summary, records: list[dict], out: Path) -> Path:
    plt = _pyplot()
    ok = [r for r in records if r["ok"]]
    series = {
        "request latency": ([r["latency_s"] * 1000 for r in ok], summary.latency_ms),
        "time to first token": ([r["ttft_s"] * 1000 for r in ok if r["ttft_s"] is not None], summary.ttft_ms),
        "inter-token latency": ([g * 1000 for r in ok for g in r["itl_s"]], summary.itl_ms),
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (title, (values, pct)) in zip(axes, series.items()):
        if values:
            ax.hist(values, bins=40, color="#4c72b0", alpha=0.85)
            for name, value, style in (("p50", pct.p50, "-"), ("p95", pct.p95, "--"), ("p99", pct.p99, ":")):
                ax.axvline(value, color="#c44e52", linestyle=style, label=f"{name} {value:.0f} ms")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("ms")
    axes[0].set_ylabel("requests" if ok else "")
    fig.suptitle(f"{summary.label}: {summary.users} users, {summary.request_rate:.1f} req/s, "
                 f"{summary.failures} errors / {summary.requests}")
    return _save(fig, out / f"{summary.label}_latency.png")


def plot_timeline(summary, records: list[dict], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if records:
        t0 = min(r["t_start"] for r in records)
        ends = np.array([r["t_start"] - t0 + (r["latency_s"] or 0) for r in records])
        bins = np.arange(0, max(ends.max(), 1) + 1, 1.0)
        ok_mask = np.array([r["ok"] for r in records])
        ax.hist(ends[ok_mask], bins=bins, color="#55a868", label="completed / s")
        if (~ok_mask).any():
            ax.hist(ends[~ok_mask], bins=bins, color="#c44e52", label="failed / s")
        ax2 = ax.twinx()
        lat = np.array([(r["latency_s"] or 0) * 1000 for r in records])
        index = np.digitize(ends, bins)
        centres = [bins[i - 1] + 0.5 for i in sorted(set(index)) if ok_mask[index == i].any()]
        medians = [np.median(lat[(index == i) & ok_mask]) for i in sorted(set(index)) if ok_mask[index == i].any()]
        ax2.plot(centres, medians, color="#4c72b0", marker=".", label="median latency (ms)")
        ax2.set_ylabel("median latency (ms)")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("seconds since first request")
    ax.set_ylabel("requests per second")
    ax.set_title(f"{summary.label}: throughput over time")
    return _save(fig, out / f"{summary.label}_timeline.png")


def plot_monitor(summary, samples: list[dict], out: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    t = [s["elapsed_s"] for s in samples]
    ax = axes[0]
    ax.plot(t, [s.get("cpu_percent", np.nan) for s in samples], label="host CPU %")
    if any("gpu_util_percent" in s for s in samples):
        ax.plot(t, [s.get("gpu_util_percent", np.nan) for s in samples], label="GPU util %")
    ax.set_ylim(0, 105)
    ax.set_title("utilisation")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(t, [s.get("mem_used_mib", np.nan) / 1024 for s in samples], label="host used (GiB)")
    if any("server_rss_mib" in s for s in samples):
        ax.plot(t, [s.get("server_rss_mib", np.nan) / 1024 for s in samples], label="vLLM RSS (GiB)")
    ax.set_title("memory")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(t, [s.get("vllm_running", np.nan) for s in samples], label="running")
    ax.plot(t, [s.get("vllm_waiting", np.nan) for s in samples], label="waiting")
    gen = [s.get("vllm_generation_tokens_total", np.nan) for s in samples]
    if len(t) > 1:
        rate = np.diff(gen) / np.maximum(np.diff(t), 1e-9)
        ax2 = ax.twinx()
        ax2.plot(t[1:], rate, color="#c44e52", label="generated tokens/s")
        ax2.set_ylabel("tokens/s (from /metrics)")
        ax2.legend(loc="upper right", fontsize=8)
    ax.set_title("vLLM /metrics")
    ax.legend(loc="upper left", fontsize=8)
    for ax in axes:
        ax.set_xlabel("seconds")
    fig.suptitle(f"{summary.label}: monitoring ({len(samples)} samples)")
    return _save(fig, out / f"{summary.label}_monitor.png")


def plot_load_test(summary, records: list[dict], samples: list[dict], out: Path) -> list[Path]:
    return [plot_latency(summary, records, out), plot_timeline(summary, records, out),
            plot_monitor(summary, samples, out)]


def plot_comparison(summaries: list, out: Path, name: str = "comparison.png") -> Path:
    """Side-by-side bars of the headline figures of several runs (e.g. base vs LoRA)."""
    plt = _pyplot()
    metrics = [
        ("requests / s", lambda s: s.request_rate),
        ("output tokens / s", lambda s: s.output_tokens_per_s),
        ("latency p50 / p95 / p99 (ms)", None),
        ("TTFT p50 / p95 (ms)", None),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(15, 3.6))
    labels = [s.label for s in summaries]
    x = np.arange(len(summaries))
    for ax, (title, getter) in zip(axes, metrics):
        if getter is not None:
            ax.bar(x, [getter(s) for s in summaries], color="#4c72b0")
        elif title.startswith("latency"):
            for k, (key, colour) in enumerate((("p50", "#4c72b0"), ("p95", "#dd8452"), ("p99", "#c44e52"))):
                ax.bar(x + (k - 1) * 0.25, [getattr(s.latency_ms, key) or 0 for s in summaries], 0.25, color=colour, label=key)
            ax.legend(fontsize=8)
        else:
            for k, (key, colour) in enumerate((("p50", "#4c72b0"), ("p95", "#dd8452"))):
                ax.bar(x + (k - 0.5) * 0.35, [getattr(s.ttft_ms, key) or 0 for s in summaries], 0.35, color=colour, label=key)
            ax.legend(fontsize=8)
        ax.set_xticks(x, labels, rotation=15)
        ax.set_title(title)
    return _save(fig, out / name)
