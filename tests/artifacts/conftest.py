"""The smallest documented report, for the artifact tests (`store_artifact`: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def report_document(job_id: str) -> dict[str, Any]:
    """The smallest report of the documented shape (schema_version "1")."""
    measurement = {
        "format": "onnx",
        "runtime": "onnxruntime",
        "size_bytes": 100,
        "compressed_size_bytes": 90,
        "parameters": 10,
        "nonzero_parameters": 10,
        "sparsity": 0.0,
        "load_ms": 1.0,
        "load_rss_bytes": 0,
        "latency_ms": {"1": {"p50": 0.5, "iterations": 5}},
        "throughput": {"1": 2000.0},
        "memory": {"peak_rss_bytes": None, "how": "not measured"},
    }
    output = {
        "max_abs_error": 0.0,
        "mean_abs_error": 0.0,
        "cosine_min": 1.0,
        "cosine_mean": 1.0,
        "top1_agreement": 1.0,
        "nan_or_inf": False,
        "shape_match": True,
    }
    return {
        "schema_version": "1",
        "job_id": job_id,
        "model": {"id": "m", "name": "mlp.onnx", "format": "onnx", "sha256": "0" * 64},
        "baseline": measurement,
        "optimized": measurement,
        "comparison": {"size_ratio": 1.0, "speedup": {"1": 1.0}},
        "fidelity": {"inputs": "synthesized", "samples": 4, "outputs": {"output": output}},
        "steps": [],
        "environment": {
            "device": "cpu",
            "execution_provider": ["CPUExecutionProvider"],
            "cpu_model": None,
            "cpu_flags": [],
            "cores": 2,
            "threads": 1,
            "memory_bytes": None,
            "python": "3.11",
            "platform": "linux",
            "libraries": {},
        },
        "benchmark": {
            "batch_sizes": [1],
            "iterations": 5,
            "warmup": 1,
            "threads": 1,
            "interleaved": True,
            "inputs": [],
        },
        "verdict": {"met": None, "reasons": [], "notes": []},
    }


@pytest.fixture
def report() -> Callable[[str], dict[str, Any]]:
    """`report_document`, as a fixture (test modules cannot import a conftest)."""
    return report_document
