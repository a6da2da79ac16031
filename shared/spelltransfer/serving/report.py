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

from markupsafe import Markup

from spelltransfer.atomic import write_text_atomic
from spelltransfer.serving.loadtest import LoadTestSummary
from spelltransfer.serving.model_card import eval_table_rows, load_eval_files

TEMPLATE = "deployment.html.j2"   # in templates/ beside this module: the page's markup and style


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def load_summaries(data_dir: Path) -> list[LoadTestSummary]:
    summaries = [LoadTestSummary.model_validate_json(p.read_text()) for p in sorted(data_dir.glob("*_summary.json"))]
    return sorted(summaries, key=lambda s: s.started_at)


def load_table(summaries: list[LoadTestSummary]) -> dict:
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
    return {"headers": headers, "rows": rows}


def eval_table(evals: dict[str, dict]) -> dict:
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
    return {"headers": ["task", *labels], "rows": rows}


def api_eval_table(path: Path) -> dict | None:
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    rows = []
    for model, tasks in result["models"].items():
        for task, f in tasks.items():
            rows.append([model, task, str(f["n"]), f"{100 * f['in_process']:.1f} %", f"{100 * f['api']:.1f} %",
                         f"{100 * (f['api'] - f['in_process']):+.1f} pt", f"{100 * f['agreement']:.1f} %"])
    return {"headers": ["model", "task", "n", "in-process accuracy", "vLLM API accuracy", "difference",
                        "identical answers"], "rows": rows, "note": result.get("tolerance", "")}


def _escape(value) -> Markup:
    # html.escape's entities (&quot; &#x27;), not markupsafe's (&#34; &#39;): the page stays byte for byte
    # what it was before the template; Markup (a rendered macro) is already safe.
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


def render(**context) -> str:
    """The page from ``templates/deployment.html.j2``; every value is escaped as text."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(loader=PackageLoader("spelltransfer.serving", "templates"), autoescape=True,
                              finalize=_escape, undefined=StrictUndefined)
    return environment.get_template(TEMPLATE).render(**context)


def build_report(out_dir: Path, eval_files: dict[str, Path] | None = None, title: str = "spelltransfer deployment report") -> Path:
    """Write ``OUT/reports/deployment.html`` (+ the comparison figure) and return its path."""
    from spelltransfer.serving.plots import plot_comparison

    out_dir = Path(out_dir)
    data_dir, figures_dir, reports_dir = out_dir / "data", out_dir / "figures", out_dir / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    summaries = load_summaries(data_dir) if data_dir.is_dir() else []
    evals = load_eval_files(eval_files or {})
    runs, comparison = [], None
    if summaries:
        comparison = os.path.relpath(plot_comparison(summaries, figures_dir), reports_dir)
        for s in summaries:
            figures = [{"kind": kind, "src": os.path.relpath(figures_dir / f"{s.label}_{kind}.png", reports_dir)}
                       for kind in ("latency", "timeline", "monitor") if (figures_dir / f"{s.label}_{kind}.png").is_file()]
            runs.append({"label": s.label, "model": s.model, "base_url": s.base_url, "users": s.users,
                         "run_time_s": s.run_time_s, "max_tokens": s.max_tokens,
                         "errors": json.dumps(s.errors) if s.errors else None, "figures": figures})
    page = render(title=title, generated=f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}", out_dir=str(out_dir),
                  evals=eval_table(evals) if evals else None, api_eval=api_eval_table(data_dir / "api_eval.json"),
                  load_tests=load_table(summaries) if summaries else None, comparison=comparison, runs=runs)
    path = reports_dir / "deployment.html"
    write_text_atomic(path, page, fsync=False)
    return path
