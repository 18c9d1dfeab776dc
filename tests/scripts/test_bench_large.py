"""The over-2-GB section of BENCHMARKS.md, rendered from docs/bench/large.json
(`scripts/bench.py --large`): absent, it says how to measure it; saved, every figure is the
record's."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import large  # noqa: E402

SANDBOX = "sandbox processes (template and job or inspection children)"


def _memory(sandbox_hwm: int, total: int) -> dict[str, Any]:
    return {
        "tree_rss_sum_peak_mb": total,
        "stopped_over_limit": False,
        "processes": {
            "api (modelpress run)": {"peak_rss_mb": 110, "vmhwm_mb": 110, "processes": 1},
            SANDBOX: {"peak_rss_mb": sandbox_hwm - 5, "vmhwm_mb": sandbox_hwm, "processes": 2},
        },
    }


def _record() -> dict[str, Any]:
    job = {
        "status": "succeeded",
        "wall_s": 241.8,
        "memory": _memory(6344, 6768),
        "artifact": {
            "name": "model.onnx",
            "size_bytes": 620_520_156,
            "download_s": 5.3,
            "check": {
                "loads": True,
                "cosine_min_vs_torch": 0.8857,
                "max_abs_error_vs_torch": 1.94,
                "next_token_agreement_vs_torch": 0.25,
            },
        },
        "report": {
            "baseline": {"latency_ms": {"1": {"p50": 1001.3}}},
            "optimized": {"latency_ms": {"1": {"p50": 2235.9}}},
            "comparison": {"size_ratio": 0.2714, "speedup": {"1": 0.4479}, "noise": None},
            "fidelity": {
                "samples": 32,
                "outputs": {
                    "logits": {
                        "cosine_mean": 0.91195,
                        "cosine_min": 0.89069,
                        "top1_agreement": 0.3125,
                    }
                },
            },
            "steps": [{"op": "quantize", "warnings": ["Embedding tables stay float."]}],
        },
    }
    failed = {"status": "failed", "wall_s": 3.0, "error": {"code": "oom"}}
    return {
        "run": {
            "command": "python scripts/bench.py --large",
            "date": "2026-12-01",
            "load_average_1min_before": 4.455,
            "wall_s": 997.6,
        },
        "config": {"sequence": 16, "iterations": 5, "raised_upload_limit_bytes": 4 * 1024**3},
        "weights": "random (untrained)",
        "export": {"exporter": "torch.onnx.export", "parameters": 571_516_928, "export_s": 63.2},
        "archive": {"bytes": 2_286_351_796, "wall_s": 7.0},
        "upload_default_limit": {
            "http_status": 413,
            "post_s": 5.0,
            "error": {
                "code": "payload_too_large",
                "detail": "The upload exceeds the limit of 2147483648 bytes.",
            },
        },
        "upload": {"http_status": 201, "post_s": 16.7, "status": "ready", "ready_s": 57.5},
        "jobs": {"quantize weight_only bits 4": job, "static int8": failed},
    }


def test_without_large_json_the_section_says_how_to_measure_it() -> None:
    text = large.render(None)

    assert text.startswith(large.TITLE)
    assert "Not measured yet: `python scripts/bench.py --large`." in text


def test_a_saved_record_renders_its_own_figures() -> None:
    text = large.render(_record())

    assert "on 2026-12-01 in 17 min (1-minute load average 4.46 as it started)" in text
    assert "571,516,928 parameters" in text and "random (untrained)" in text
    assert "HTTP 413 `payload_too_large` after 5.0 s" in text
    assert "The default limit was 2 GiB when this ran" in text
    assert "`MODELPRESS_MAX_UPLOAD_BYTES=4294967296`): HTTP 201 after 16.7 s" in text
    assert (
        "| quantize weight_only bits 4 | succeeded | 241.8 | `model.onnx` (one file) | 620.5 "
        "| 0.271 | 1001 -> 2236 (2.23x slower) "
        "| 32 inputs: cosine mean 0.9120 / min 0.8907, top-1 0.312 "
        "| cosine min 0.8857, max abs 1.9, next token 0.250 | 6344 | 6768 | 110 |"
    ) in text
    assert "| static int8 | failed: {'code': 'oom'} | 3.0 | n/a |" in text
    assert 'the quantize step warned: "Embedding tables stay float."' in text
