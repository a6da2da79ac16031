"""The deployment report rendered from its jinja2 template is the page the string-built report wrote
(captured from it before the switch): same markup, same escaping, byte for byte. Chromium
rendering is tests/serving/test_report.py."""

from __future__ import annotations

import datetime as real_dt
import json

import spelltransfer.serving.report as report

BEFORE = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>report &quot;A&amp;B&quot;</title>"
    '<style>\n'
    'body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }\n'
    'table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }\n'
    'th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }\n'
    'th:first-child, td:first-child { text-align: left; }\n'
    'th { background: #f0f0f0; }\n'
    'img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }\n'
    '.note { color: #666; font-size: 0.9em; }\n'
    "</style></head><body><h1>report &quot;A&amp;B&quot;</h1><p class='note'>"
    'Generated 2024-05-06 07:08 UTC from ROOT.</p><h2>Evaluation</h2><table><thead><tr><th>task</th>'
    '<th>tuned</th></tr></thead><tbody><tr><td>spelling</td><td>80.0 % [70.0, 90.0] n=100</td></tr>'
    '<tr><td>count</td><td>10.0 %</td></tr></tbody></table><h3>'
    'Same model in-process vs through the vLLM API</h3><table><thead><tr><th>model</th><th>task</th>'
    '<th>n</th><th>in-process accuracy</th><th>vLLM API accuracy</th><th>difference</th><th>'
    'identical answers</th></tr></thead><tbody><tr><td>tuned</td><td>spelling</td><td>50</td><td>'
    "80.0 %</td><td>78.0 %</td><td>-2.0 pt</td><td>96.0 %</td></tr></tbody></table><p class='note'>"
    "answers &lt;equal&gt; &amp; &#x27;within&#x27; 1 pt</p><h2>Load tests</h2><p class='note'>"
    'No load tests in this folder (data/*_summary.json).</p></body></html>'
)


class _FixedClock:
    timezone = real_dt.timezone

    class datetime:
        @staticmethod
        def now(tz=None):
            return real_dt.datetime(2024, 5, 6, 7, 8, tzinfo=tz)


def test_template_renders_the_page_the_old_builder_wrote(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "dt", _FixedClock)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "api_eval.json").write_text(json.dumps({
        "tolerance": "answers <equal> & 'within' 1 pt",
        "models": {"tuned": {"spelling": {"n": 50, "in_process": 0.8, "api": 0.78, "agreement": 0.96}}}}))
    evals = tmp_path / "e.json"
    evals.write_text(json.dumps({"tasks": {"spelling": {"accuracy": 0.8, "ci95": [0.7, 0.9], "n": 100},
                                           "count": {"accuracy": 0.1}}}))
    page = report.build_report(tmp_path, {"tuned": evals}, title='report "A&B"').read_text()
    assert page == BEFORE.replace("ROOT", str(tmp_path))
