"""BENCHMARKS.md is rendered from saved measurements alone: every section from `make bench`'s
results, the GPU section from docs/bench/gpu.json (scripts/benchlib)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import BENCH_JSON, BENCHMARKS_MD, GPU_JSON  # noqa: E402
from benchlib.render import load, render  # noqa: E402

SECTIONS = (
    "# Benchmarks",
    "## Dynamic int8 on a 44 MB transformer encoder (ONNX)",
    "## The classic example network (`examples/seed_network.py`)",
    "## The service itself",
    "## A `device: cuda` job (`scripts/gpu_check.py`)",
)


def _measurement(size: int, p50s: tuple[float, float], runtime: str = "onnxruntime") -> dict:
    return {
        "format": "onnx",
        "runtime": runtime,
        "provider": "CPUExecutionProvider",
        "size_bytes": size,
        "compressed_size_bytes": size // 2,
        "parameters": 1000,
        "nonzero_parameters": 900,
        "latency_ms": {"1": {"p50": p50s[0]}, "32": {"p50": p50s[1]}},
        "memory": {"peak_rss_bytes": 123},
    }


def _report(**extra: Any) -> dict[str, Any]:
    fid = {"cosine_min": 0.987654, "cosine_mean": 0.99, "max_abs_error": 0.0321}
    return {
        "baseline": _measurement(44_200_000, (3.5, 117.25)),
        "optimized": _measurement(11_300_000, (2.25, 66.5)),
        "comparison": {"speedup": {"1": 1.5, "32": 1.7}, "noise": {"1": 1.01, "32": 0.99}},
        "fidelity": {"outputs": {"out": fid}, "second_shape": {"input_ids": [2, 64]}},
        "steps": [{"op": "quantize", "implicit": False, "config": {"per_channel": True}}],
        "benchmark": {"batch_sizes": [1, 32]},
        **extra,
    }


def _script(per_channel: bool, cosine: float) -> dict[str, Any]:
    lat = {b: {"fp32": {"p50": 7.125}, "int8": {"p50": 2.5}} for b in ("1", "32")}
    fid = {"cosine_min": cosine}
    return {"per_channel": per_channel, "wall_s": 6.75, "latency": lat, "fidelity": fid, "size": 1}


def fake_results() -> dict[str, Any]:
    """A small results record shaped like scripts/bench.py's measure() output."""
    env = {"cpu_model": "Fake CPU", "cores": 3, "cpu_flags": ["avx2"], "libraries": {"x": "1.0"}}
    accuracy = {"baseline": 0.925, "optimized": 0.9111, "samples": 360}
    seed_report = _report(accuracy=accuracy)
    seed_report["baseline"]["runtime"] = "torch"
    return {
        "run": {"command": "python scripts/bench.py", "date": "2030-01-02", "wall_s": 600.0},
        "transformer": {
            "config": {"vocab": 30522, "width": 256, "heads": 4, "ffn": 1024, "layers": 4}
            | {"sequence": 128, "batch_sizes": [1, 32], "iterations": 20},
            "model_bytes": 44_200_000,
            "service": {
                "wall_s": 16.25,
                "job_id": "j",
                "spec": {"steps": [{"op": "quantize"}]},
                "report": _report(environment=env),
            },
            "script_per_channel": _script(True, 0.999973),
            "script_per_tensor": _script(False, 0.999971),
        },
        "seed_network": {
            "config": {"layers": ["conv 3->64", "fc 10->2"], "input_shape": [3, 24, 24]}
            | {"epochs": 4, "train_samples": 1437, "test_samples": 360},
            "jobs": [
                {"job": "magnitude pruning 80%", "report": seed_report},
                {"job": "static int8", "status": "failed", "error": {"code": "boom"}},
            ],
        },
        "api_reads_ms": {"p50": 2.64, "p99": 6.21, "n": 500, "paths": ["/v1/jobs/{id}", "/a"]},
        "upload_memory": {
            "upload_mb": 512,
            "status": 415,
            "rss_before_mb": 101.6,
            "peak_mb": 102.4,
        },
    }


def gpu_section(text: str) -> str:
    return text[text.index(SECTIONS[-1]) :]


def test_every_section_is_rendered_in_order() -> None:
    text = render(fake_results(), load(GPU_JSON))
    positions = [text.index(heading) for heading in SECTIONS]
    assert positions == sorted(positions)
    assert "| ModelPress job (submit to finish) | 16.2 |" in text
    assert "| p50 latency, batch 32 (ms) | 117.25 | 66.50 | 1.76x faster |" in text
    assert "| static int8 | failed: {'code': 'boom'} |" in text
    assert "p50 2.6 ms, p99 6.2 ms" in text
    assert "on 2030-01-02" in text and "Fake CPU, 3 cores" in text


def test_the_gpu_section_comes_from_gpu_json(tmp_path: Path) -> None:
    saved = load(GPU_JSON)
    assert saved is not None, "docs/bench/gpu.json is the GPU section's only source"
    before = gpu_section(render(fake_results(), saved))
    for device, run in saved["runs"].items():
        assert f"`device: {device}`" in before
        assert f"{run['job_wall_s']:.2f} s" in before
    changed = copy.deepcopy(saved)
    changed["runs"]["cuda"]["job_wall_s"] = 98.76
    changed["source"]["date"] = "2099-12-31"
    copy_path = tmp_path / "gpu.json"
    copy_path.write_text(json.dumps(changed))
    after = gpu_section(render(fake_results(), load(copy_path)))
    assert "98.76 s" in after and "98.76 s" not in before
    assert "2099-12-31" in after
    assert f"{saved['runs']['cuda']['job_wall_s']:.2f} s" not in after


def test_without_gpu_json_the_section_says_how_to_measure_it() -> None:
    section = gpu_section(render(fake_results(), None))
    assert "scripts/gpu_check.py OUT" in section and "--render" in section


@pytest.mark.skipif(not BENCH_JSON.exists(), reason="no saved `make bench` run")
def test_benchmarks_md_is_what_the_saved_measurements_render_to() -> None:
    expected = render(load(BENCH_JSON), load(GPU_JSON))
    assert BENCHMARKS_MD.read_text() == expected, "run `python scripts/bench.py --render`"
