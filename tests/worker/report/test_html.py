"""Tests for the self-contained HTML report, rendered from its template."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from app.artifacts import router
from app.artifacts.schemas import REPORT_CSP, Report
from worker.report.html import render_html

HOSTILE_NAME = "<script>alert(1)</script>"


def _page(report: dict[str, Any]) -> str:
    return render_html(Report.model_validate(report))


class _MetaCsp(HTMLParser):
    """Collects the content of the page's CSP meta tags, entities decoded as a browser does."""

    def __init__(self) -> None:
        super().__init__()
        self.policies: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.policies.append(values.get("content"))


def test_full_report_renders_a_complete_page(full_report: dict[str, Any]) -> None:
    page = _page(full_report)

    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert "job-123" in page
    assert "Targets met" in page


def test_full_report_draws_size_latency_and_candidate_charts(full_report: dict[str, Any]) -> None:
    page = _page(full_report)

    assert page.count("<svg") == 3


def test_report_without_candidates_draws_two_charts(full_report: dict[str, Any]) -> None:
    del full_report["candidates"]

    page = _page(full_report)

    assert page.count("<svg") == 2


def test_latency_chart_draws_a_whisker_on_every_bar(full_report: dict[str, Any]) -> None:
    page = _page(full_report)

    # Two batch sizes, two sides: four p90-p99 whiskers; two candidates measured: two dots.
    assert page.count('stroke="#111"') == 4
    assert page.count("<circle") == 2


def test_page_makes_no_external_request(full_report: dict[str, Any]) -> None:
    page = _page(full_report)

    assert "http://" not in page
    assert "https://" not in page
    assert "<link" not in page
    assert not re.search(r"\bsrc\s*=", page)
    assert "@import" not in page


def test_hostile_model_name_is_escaped(full_report: dict[str, Any]) -> None:
    page = _page(full_report)

    assert HOSTILE_NAME not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page


def test_step_warnings_are_escaped(full_report: dict[str, Any]) -> None:
    page = _page(full_report)

    assert "kept &lt;b&gt;FFN&lt;/b&gt; in fp32" in page


def test_template_autoescapes_node_names_and_notes(full_report: dict[str, Any]) -> None:
    full_report["steps"][0]["warnings"] = ["excluded node <script>steal()</script>"]
    full_report["verdict"]["notes"] = ['<script>alert("note")</script>']
    outputs = full_report["fidelity"]["outputs"]
    outputs["<script>out</script>"] = outputs.pop("logits")
    full_report["candidates"][0]["name"] = "<script>cand</script>"

    page = _page(full_report)

    assert "<script" not in page
    assert "excluded node &lt;script&gt;steal()&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#34;note&#34;)&lt;/script&gt;" in page
    assert "&lt;script&gt;out&lt;/script&gt;" in page
    assert "&lt;script&gt;cand&lt;/script&gt;" in page


def test_meta_tag_policy_is_the_served_header(full_report: dict[str, Any]) -> None:
    parser = _MetaCsp()

    parser.feed(_page(full_report))

    assert parser.policies == [REPORT_CSP]
    assert router.REPORT_CSP is REPORT_CSP


def test_policy_blocks_every_fetch() -> None:
    directives = dict(d.strip().split(" ", 1) for d in REPORT_CSP.split(";"))

    assert directives["default-src"] == "'none'"
    # Nothing is allowed from anywhere: inline styles are the one exception the page needs.
    assert set(directives.values()) <= {"'none'", "'unsafe-inline'"}
    assert directives["style-src"] == "'unsafe-inline'"
    assert "script-src" not in directives


def test_latency_rows_show_each_batch_size(full_report: dict[str, Any]) -> None:
    page = _page(full_report)

    assert "Batch 32 latency p99" in page
    assert "1.78x" in page


def test_minimal_report_renders_not_measured(full_report: dict[str, Any]) -> None:
    for side in ("baseline", "optimized"):
        full_report[side].update(latency_ms={}, throughput={})
    full_report["comparison"] = {"size_ratio": None, "speedup": {}}
    full_report["fidelity"]["outputs"] = {}
    full_report.update(steps=[], verdict={"met": None, "reasons": [], "notes": []})
    del full_report["accuracy"], full_report["candidates"]

    page = _page(full_report)

    assert "<svg" in page
    assert "not measured" in page
    assert "No verdict" in page
    assert "No steps were recorded." in page


def test_none_values_render_as_not_measured(full_report: dict[str, Any]) -> None:
    full_report["optimized"]["parameters"] = None
    full_report["optimized"]["latency_ms"]["1"]["p50"] = None

    page = _page(full_report)

    assert "None" not in page
    assert page.count("not measured") >= 2
    assert "n/m" in page  # the bar that has no p50


def test_unexpected_values_in_open_fields_do_not_crash(full_report: dict[str, Any]) -> None:
    full_report["steps"][0]["metrics"] = {"sizes": "big", "nested": {"a": [1, None]}}
    full_report["environment"]["cpu_flags"] = []
    full_report["from_a_newer_worker"] = {"anything": True}

    page = _page(full_report)

    assert "sizes=big" in page
    assert "nested=a=1, not measured" in page


def test_unmet_verdict_is_shown_with_its_reasons(full_report: dict[str, Any]) -> None:
    full_report["verdict"] = {"met": False, "reasons": ["p50 latency 1.1x > 0.8x"], "notes": []}

    page = _page(full_report)

    assert "Targets not met" in page
    assert "p50 latency 1.1x &gt; 0.8x" in page


def test_sensitivity_is_drawn_most_sensitive_first(full_report: dict[str, Any]) -> None:
    rows = [
        {"node": "down<script>", "op_type": "MatMul", "error": 0.5, "time_share": 0.2},
        {"node": "up", "op_type": "MatMul", "error": 0.01, "time_share": 0.7},
        {"node": "head", "op_type": "MatMul", "error": None, "time_share": 0.1},
    ]
    full_report["steps"][0]["sensitivity"] = rows

    page = render_html(Report.model_validate(full_report))

    assert "Layer sensitivity (step 1" in page
    assert page.index("down&lt;script&gt;") < page.index(">up<")
    assert 'style="width:200px"' in page and 'style="width:4px"' in page
    assert "<script>" not in page
