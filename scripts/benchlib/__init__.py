"""`make bench`'s pieces: what it measures (transformer, seed, service) and how it renders them.

The measurements of one run are saved as JSON under `docs/bench/` and BENCHMARKS.md is rendered
from those files alone, so every figure in it can be traced to a saved measurement.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "docs" / "bench"
BENCH_JSON = BENCH_DIR / "bench.json"
GPU_JSON = BENCH_DIR / "gpu.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
