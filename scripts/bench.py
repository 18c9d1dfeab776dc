"""`make bench`: measure ModelPress on this machine and write BENCHMARKS.md from what it measured.

    python scripts/bench.py           # measure, save docs/bench/bench.json, write BENCHMARKS.md
    python scripts/bench.py --render  # write BENCHMARKS.md from docs/bench/*.json, measure nothing

Everything is measured in this one run, side by side:
1. service overhead: a quantize job's wall time through the API (embedded mode) vs the same
   work (quantize, load both, time both at the same batch sizes, compare outputs) in a script;
2. our dynamic int8 defaults vs ONNX Runtime's `quantize_dynamic` defaults on a transformer;
3. the example network (examples/seed_network.py) through its four jobs;
4. API read latency under sequential load, and API memory while streaming a large upload.
The GPU section is not measured here: scripts/gpu_check.py saves it to docs/bench/gpu.json on a
CUDA machine, and it is rendered from that file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import BENCH_JSON, BENCHMARKS_MD, GPU_JSON, seed, service, transformer  # noqa: E402
from benchlib.render import load, render  # noqa: E402


def timed(timings: dict[str, float], name: str, func: Callable[..., Any], *args: Any) -> Any:
    """Call func(*args) and record its wall time under `name` (the record says what took long)."""
    started = time.perf_counter()
    result = func(*args)
    timings[name] = round(time.perf_counter() - started, 1)
    return result


def measure(tmp: Path, command: str) -> dict[str, Any]:
    """Every CPU measurement of BENCHMARKS.md, in one run, against one embedded service."""
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    timings: dict[str, float] = {}
    model = timed(timings, "build_transformer", transformer.build_transformer, tmp / "enc.onnx")
    proc, client = service.start_service(tmp / "data")
    try:
        job = timed(timings, "transformer_job", transformer.service_job, client, model)
        direct = transformer.direct_script
        pc = timed(timings, "script_pc", direct, Path(__file__), model, tmp / "pc.onnx", True)
        pt = timed(timings, "script_pt", direct, Path(__file__), model, tmp / "pt.onnx", False)
        reads = timed(timings, "api_reads", service.api_reads, client, job["job_id"])
        memory = timed(timings, "upload", service.upload_memory, client, proc.pid, tmp)
        seed_net = timed(timings, "seed_network", seed.seed_network, client, tmp)
    finally:
        service.stop_service(proc)
    return {
        "run": {
            "command": command,
            "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
            # Other work on the machine distorts every latency: the record says how busy it was.
            "load_average_1min_before": load_before,
            "wall_s": round(time.perf_counter() - started, 1),
            "timings_s": timings,
        },
        "transformer": {
            "config": transformer.CONFIG,
            "model_bytes": model.stat().st_size,
            "service": job,
            "script_per_channel": pc,
            "script_per_tensor": pt,
        },
        "seed_network": seed_net,
        "api_reads_ms": reads,
        "upload_memory": memory,
    }


def main(argv: list[str]) -> None:
    """Measure (or, with --render, only re-render) and write BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="re-render from docs/bench/*.json")
    args = parser.parse_args(argv)
    if args.render:
        results = load(BENCH_JSON)
        if results is None:
            sys.exit(f"{BENCH_JSON} is missing: run `make bench` first")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="modelpress-bench-"))
        try:
            results = measure(tmp, " ".join(["python", "scripts/bench.py", *argv]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        BENCH_JSON.parent.mkdir(parents=True, exist_ok=True)
        BENCH_JSON.write_text(json.dumps(results, indent=1, default=str) + "\n")
    BENCHMARKS_MD.write_text(render(results, load(GPU_JSON)))
    print(f"wrote {BENCHMARKS_MD.relative_to(ROOT)} from {BENCH_JSON.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--direct"]:
        # The child side of transformer.direct_script(): one JSON line on stdout.
        model, out, per_channel = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
        print(json.dumps(transformer.run_direct(model, out, per_channel), default=str))
    else:
        main(sys.argv[1:])
