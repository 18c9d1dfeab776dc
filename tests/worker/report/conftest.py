"""A complete report in the shape the worker writes (it validates as `Report`)."""

from __future__ import annotations

from typing import Any

import pytest


def _latency(ms: float) -> dict[str, Any]:
    stats = {"mean": ms, "std": 0.1, "min": ms * 0.9, "max": ms * 1.5, "p50": ms}
    return {**stats, "p90": ms * 1.1, "p95": ms * 1.2, "p99": ms * 1.3, "iterations": 50}


def _side(size: int, ms: float) -> dict[str, Any]:
    latency = {"1": _latency(ms), "32": _latency(ms * 20)}
    return {
        "format": "onnx",
        "runtime": "onnxruntime",
        "provider": "CPUExecutionProvider",
        "size_bytes": size,
        "compressed_size_bytes": size * 9 // 10,
        "parameters": 22_000_000,
        "nonzero_parameters": 21_000_000,
        "sparsity": 0.045,
        "load_ms": 120.5,
        "load_rss_bytes": 90_000_000,
        "latency_ms": latency,
        "throughput": {"1": 1000 / ms, "32": 32000 / (ms * 20)},
        "memory": {"peak_rss_bytes": 200_000_000, "measured_in": "a process of its own"},
    }


def _fidelity() -> dict[str, Any]:
    stats = {
        "max_abs_error": 0.12,
        "mean_abs_error": 0.01,
        "cosine_min": 0.96,
        "cosine_mean": 0.99,
        "top1_agreement": None,
        "nan_or_inf": False,
        "shape_match": True,
    }
    return {"inputs": "synthesized", "samples": 32, "batch_size": 64, "outputs": {"logits": stats}}


def _step() -> dict[str, Any]:
    return {
        "op": "quantize",
        "implicit": False,
        "spec_step": 0,
        "config": {"method": "dynamic", "per_channel": True},
        "pass_version": "1",
        "wall_s": 2.5,
        "input_format": "onnx",
        "output_format": "onnx",
        "metrics": {"int8_initializers": 36},
        "warnings": ["kept <b>FFN</b> in fp32"],
    }


def _environment() -> dict[str, Any]:
    return {
        "device": "cpu",
        "execution_provider": ["CPUExecutionProvider"],
        "cpu_model": "AMD EPYC",
        "cpu_flags": ["avx2", "fma"],
        "cores": 2,
        "threads": 2,
        "memory_bytes": 8_000_000_000,
        "python": "3.11.7",
        "platform": "Linux",
        "libraries": {"torch": "2.13.0"},
    }


def _candidates() -> list[dict[str, Any]]:
    measured = {"error": None, "accuracy": None, "speedup": {"1": 1.0}, "wall_s": 3.0}
    return [
        {
            **measured,
            "name": "int8",
            "steps": [{"op": "quantize"}],
            "size_bytes": 23_000_000,
            "latency_ms_p50": {"1": 5.6},
            "accuracy": 0.98,
            "met": True,
            "chosen": True,
        },
        {
            **measured,
            "name": "fp32",
            "steps": [{"op": "optimize"}],
            "size_bytes": 91_000_000,
            "latency_ms_p50": {"1": 10.0},
            "met": False,
            "chosen": False,
        },
        {
            "name": "fp16",
            "steps": [{"op": "convert", "precision": "fp16"}],
            "error": "skipped: time budget spent",
            "met": False,
            "chosen": False,
        },
    ]


@pytest.fixture
def full_report() -> dict[str, Any]:
    """A `recipe: auto` report with accuracy, two batch sizes and a hostile model name."""
    return {
        "schema_version": "1",
        "job_id": "job-123",
        "model": {
            "id": "m-1",
            "name": "<script>alert(1)</script>",
            "format": "onnx",
            "sha256": "ab" * 32,
        },
        "baseline": _side(91_000_000, 10.0),
        "optimized": _side(23_000_000, 5.6),
        "comparison": {"size_ratio": 0.25, "speedup": {"1": 1.78, "32": 1.7}, "noise": None},
        "fidelity": _fidelity(),
        "accuracy": {
            "metric": "top1",
            "baseline": 0.99,
            "optimized": 0.98,
            "drop": 0.01,
            "samples": 100,
            "batch_size": 64,
        },
        "steps": [_step()],
        "environment": _environment(),
        "benchmark": {
            "batch_sizes": [1, 32],
            "iterations": 50,
            "warmup": 3,
            "threads": 2,
            "interleaved": True,
            "input_shapes": None,
            "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", 32]}],
        },
        "verdict": {"met": True, "reasons": ["size 0.25x <= 0.5x"], "notes": []},
        "candidates": _candidates(),
    }
