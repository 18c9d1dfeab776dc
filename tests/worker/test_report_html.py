"""Tests for the self-contained HTML report."""

import re

import pytest

from worker.report.html import render_html

HOSTILE_NAME = "<script>alert(1)</script>"


def _latency(ms: float) -> dict:
    stats = {"mean": ms, "std": 0.1, "min": ms * 0.9, "max": ms * 1.5, "p50": ms}
    return {**stats, "p90": ms * 1.1, "p95": ms * 1.2, "p99": ms * 1.3, "iterations": 50}


def _side(size: int, ms: float) -> dict:
    return {
        "format": "onnx",
        "runtime": "onnxruntime",
        "size_bytes": size,
        "compressed_size_bytes": size * 0.9,
        "parameters": 22_000_000,
        "nonzero_parameters": 21_000_000,
        "load_ms": 120.5,
        "latency_ms": {"1": _latency(ms), "32": _latency(ms * 20)},
        "throughput": {"1": 1000 / ms, "32": 32000 / (ms * 20)},
    }


@pytest.fixture
def full_report() -> dict:
    fidelity = {"max_abs_error": 0.12, "cosine_min": 0.96, "top1_agreement": None}
    step = {
        "op": "quantize",
        "config": {"method": "dynamic", "per_channel": True},
        "pass_version": "1",
        "wall_s": 2.5,
        "input_format": "onnx",
        "output_format": "onnx",
        "metrics": {"int8_initializers": 36},
        "warnings": ["kept <b>FFN</b> in fp32"],
    }
    candidate = {"steps": ["quantize"], "accuracy": 0.98, "met": True, "chosen": True}
    return {
        "schema_version": "1",
        "job_id": "job-123",
        "model": {"id": "m-1", "name": HOSTILE_NAME, "format": "onnx", "sha256": "ab" * 32},
        "baseline": _side(91_000_000, 10.0),
        "optimized": _side(23_000_000, 5.6),
        "comparison": {"size_ratio": 0.25, "speedup": {"1": 1.78, "32": 1.7}},
        "fidelity": {"inputs": "synthesized", "samples": 32, "outputs": {"logits": fidelity}},
        "accuracy": {"metric": "top1", "baseline": 0.99, "optimized": 0.98, "drop": 0.01},
        "steps": [step],
        "environment": {"cpu_model": "AMD EPYC", "cores": 2, "libraries": {"torch": "2.13.0"}},
        "benchmark": {"batch_sizes": [1, 32], "iterations": 50, "interleaved": True},
        "verdict": {"met": True, "reasons": ["size 0.25x <= 0.5x"], "notes": []},
        "candidates": [
            {**candidate, "name": "int8", "size_bytes": 23e6, "latency_ms_p50": {"1": 5.6}},
            {"name": "fp32", "size_bytes": 91e6, "latency_ms_p50": {"1": 10.0}, "met": False},
        ],
    }


def test_full_report_renders_a_complete_page(full_report: dict) -> None:
    page = render_html(full_report)

    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert "job-123" in page
    assert "Targets met" in page


def test_full_report_draws_size_latency_and_candidate_charts(full_report: dict) -> None:
    page = render_html(full_report)

    assert page.count("<svg") == 3


def test_report_without_candidates_draws_two_charts(full_report: dict) -> None:
    del full_report["candidates"]

    page = render_html(full_report)

    assert page.count("<svg") == 2


def test_page_makes_no_external_request(full_report: dict) -> None:
    page = render_html(full_report)

    assert "http://" not in page
    assert "https://" not in page
    assert "<link" not in page
    assert not re.search(r"\bsrc\s*=", page)
    assert "@import" not in page


def test_hostile_model_name_is_escaped(full_report: dict) -> None:
    page = render_html(full_report)

    assert HOSTILE_NAME not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page


def test_step_warnings_are_escaped(full_report: dict) -> None:
    page = render_html(full_report)

    assert "kept &lt;b&gt;FFN&lt;/b&gt; in fp32" in page


def test_latency_rows_show_each_batch_size(full_report: dict) -> None:
    page = render_html(full_report)

    assert "Batch 32 latency p99" in page
    assert "1.78x" in page


def test_minimal_report_renders_not_measured() -> None:
    page = render_html({})

    assert "<svg" in page
    assert "not measured" in page
    assert "No verdict" in page


def test_none_values_render_as_not_measured(full_report: dict) -> None:
    full_report["optimized"]["size_bytes"] = None
    full_report["optimized"]["latency_ms"]["1"]["p50"] = None

    page = render_html(full_report)

    assert "None" not in page
    assert page.count("not measured") >= 2


def test_malformed_values_do_not_crash() -> None:
    report = {"baseline": {"latency_ms": {"1": "fast"}, "size_bytes": "big"}, "steps": ["x"]}

    page = render_html(report)

    assert "big" in page


def test_unmet_verdict_is_shown_with_its_reasons(full_report: dict) -> None:
    full_report["verdict"] = {"met": False, "reasons": ["p50 latency 1.1x > 0.8x"]}

    page = render_html(full_report)

    assert "Targets not met" in page
    assert "p50 latency 1.1x &gt; 0.8x" in page
