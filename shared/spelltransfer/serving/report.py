"""The deployment report: one self-contained HTML page over ``results/deployment``.

It gathers what the other serving steps wrote — load-test summaries (``data/*_summary.json``),
the API-vs-in-process evaluation (``data/api_eval.json``), eval result files given on the
command line — and links the figures by relative path (``../figures/*.png``), so the folder can
be copied or archived as a whole and still render.

    spelltransfer serve report --out results/deployment --eval tuned=results/eval/tuned.json
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from pathlib import Path

from spelltransfer.atomic import write_text_atomic
from spelltransfer.serving.loadtest import LoadTestSummary
from spelltransfer.serving.model_card import eval_table_rows, load_eval_files

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
"""


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def load_summaries(data_dir: Path) -> list[LoadTestSummary]:
    summaries = [LoadTestSummary.model_validate_json(p.read_text()) for p in sorted(data_dir.glob("*_summary.json"))]
    return sorted(summaries, key=lambda s: s.started_at)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def load_table(summaries: list[LoadTestSummary]) -> str:
    headers = ["run", "model", "users", "duration s", "requests", "errors", "error rate", "req/s",
               "latency p50/p95/p99 ms", "TTFT p50/p95/p99 ms", "ITL p50/p95 ms", "output tok/s",
               "peak CPU %", "peak vLLM RSS GiB"]
    rows = []
    for s in summaries:
        rows.append([
            s.label, s.model, str(s.users), _fmt(s.duration_s), str(s.requests), str(s.failures),
            _fmt(100 * s.error_rate, 2, " %"), _fmt(s.request_rate, 2),
            f"{_fmt(s.latency_ms.p50, 0)} / {_fmt(s.latency_ms.p95, 0)} / {_fmt(s.latency_ms.p99, 0)}",
            f"{_fmt(s.ttft_ms.p50, 0)} / {_fmt(s.ttft_ms.p95, 0)} / {_fmt(s.ttft_ms.p99, 0)}",
            f"{_fmt(s.itl_ms.p50, 1)} / {_fmt(s.itl_ms.p95, 1)}", _fmt(s.output_tokens_per_s, 1),
            _fmt(s.peak_cpu_percent, 0),
            _fmt(s.peak_server_rss_mib / 1024 if s.peak_server_rss_mib else None, 2),
        ])
    return _table(headers, rows)


def eval_table(evals: dict[str, dict]) -> str:
    labels = list(evals)
    rows = []
    for row in eval_table_rows(evals):
        cells = [row["task"]]
        for label in labels:
            f = row[label]
            if not f:
                cells.append("–")
                continue
            ci = f.get("ci95")
            cells.append(f"{100 * f['accuracy']:.1f} %" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
                         + (f" n={f['n']}" if f.get("n") is not None else ""))
        rows.append(cells)
    return _table(["task", *labels], rows)


def api_eval_section(path: Path) -> str:
    if not path.is_file():
        return "<p class='note'>No API-vs-in-process evaluation in this folder (data/api_eval.json).</p>"
    result = json.loads(path.read_text())
    rows = []
    for model, tasks in result["models"].items():
        for task, f in tasks.items():
            rows.append([model, task, str(f["n"]), f"{100 * f['in_process']:.1f} %", f"{100 * f['api']:.1f} %",
                         f"{100 * (f['api'] - f['in_process']):+.1f} pt", f"{100 * f['agreement']:.1f} %"])
    note = html.escape(result.get("tolerance", ""))
    return (_table(["model", "task", "n", "in-process accuracy", "vLLM API accuracy", "difference",
                    "identical answers"], rows) + f"<p class='note'>{note}</p>")


def build_report(out_dir: Path, eval_files: dict[str, Path] | None = None, title: str = "spelltransfer deployment report") -> Path:
    """Write ``OUT/reports/deployment.html`` (+ the comparison figure) and return its path."""
    from spelltransfer.serving.plots import plot_comparison

    out_dir = Path(out_dir)
    data_dir, figures_dir, reports_dir = out_dir / "data", out_dir / "figures", out_dir / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    summaries = load_summaries(data_dir) if data_dir.is_dir() else []
    evals = load_eval_files(eval_files or {})
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} from {html.escape(str(out_dir))}.</p>",
             "<h2>Evaluation</h2>"]
    parts.append(eval_table(evals) if evals else "<p class='note'>No eval result files given (--eval LABEL=FILE).</p>")
    parts += ["<h3>Same model in-process vs through the vLLM API</h3>", api_eval_section(data_dir / "api_eval.json")]
    parts.append("<h2>Load tests</h2>")
    if summaries:
        parts.append(load_table(summaries))
        comparison = plot_comparison(summaries, figures_dir)
        parts.append(f"<img src='{os.path.relpath(comparison, reports_dir)}' alt='comparison of load tests'>")
        for s in summaries:
            parts.append(f"<h3>{html.escape(s.label)} ({html.escape(s.model)} at {html.escape(s.base_url)}, "
                         f"{s.users} users, {s.run_time_s} s, {s.max_tokens} tokens)</h3>")
            if s.errors:
                parts.append("<p>Errors: " + html.escape(json.dumps(s.errors)) + "</p>")
            for kind in ("latency", "timeline", "monitor"):
                figure = figures_dir / f"{s.label}_{kind}.png"
                if figure.is_file():
                    parts.append(f"<img src='{os.path.relpath(figure, reports_dir)}' alt='{html.escape(s.label)} {kind}'>")
    else:
        parts.append("<p class='note'>No load tests in this folder (data/*_summary.json).</p>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    path = reports_dir / "deployment.html"
    write_text_atomic(path, page, fsync=False)
    return path
