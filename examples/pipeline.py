"""A pipeline step in Python: optimize a model within a budget, read the report, and exit with
the exit codes of `modelpress optimize --wait` (0 met, 1 job failed, 2 budget missed, 3 error).

    make run                                                    # in one terminal
    .venv/bin/python examples/pipeline.py model.onnx --min-cosine 0.99 --out dist/
    .venv/bin/python examples/pipeline.py model.onnx --recipe auto --max-size-bytes 5000000

It needs only the client (`pip install modelpress`: httpx, pydantic, rich; no torch) and talks
to `MODELPRESS_URL` (default http://127.0.0.1:8000) with `MODELPRESS_API_KEY` if set. Every
answer is typed (app/client/models.py): `result.job.status`, `result.report.optimized.size_bytes`,
`result.verdict.met`, `result.exit_code`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from app.client import CLIENT_ERRORS, EXIT_ERROR, Client, JobEvent, OptimizeResult, Report


def show_event(event: JobEvent) -> None:
    """Print the job's events as they arrive: status, step, progress, log, verdict."""
    data = event.data
    if event.event == "status":
        text = str(data.get("status"))
    elif event.event == "step":
        text = f"{data.get('name')} {data.get('phase', '')}".rstrip()
    elif event.event == "progress":
        text = f"{float(data.get('fraction') or 0):4.0%} {data.get('message', '')}"
    elif event.event == "log":
        text = str(data.get("message", data.get("text", "")))
    elif event.event == "verdict":
        text = f"met={data.get('met')}"
    else:
        return  # an event this script does not know (a newer server)
    print(f"{event.event:<8} {text}", flush=True)


def constraints_of(args: argparse.Namespace) -> dict[str, Any]:
    """The budget (PRODUCT.md's `constraints`): only what was asked for."""
    budget = {
        "min_cosine": args.min_cosine,
        "min_speedup": args.min_speedup,
        "max_size_bytes": args.max_size_bytes,
        "max_latency_ms": args.max_latency_ms,
    }
    budget = {name: value for name, value in budget.items() if value is not None}
    if args.allow_slower:
        budget["fail_if_slower"] = False  # the guard: by default a slower result misses
    return budget


def summarize(report: Report) -> None:
    """What a reviewer wants from the report: size, latency, fidelity, the verdict and why."""
    base, opt = report.baseline, report.optimized
    if base.size_bytes and opt.size_bytes:
        ratio = opt.size_bytes / base.size_bytes
        print(f"size     {base.size_bytes:,} B -> {opt.size_bytes:,} B ({ratio:.2f}x)")
    for batch, latency in opt.latency_ms.items():
        before = base.latency_ms.get(batch, {}).get("p50")
        speedup = report.comparison.get("speedup", {}).get(batch)
        print(f"p50      batch {batch}: {before} ms -> {latency.get('p50')} ms (x{speedup})")
    for name, output in report.fidelity.get("outputs", {}).items():
        print(f"fidelity {name}: cosine mean {output.get('cosine_mean'):.6f}")
    if report.accuracy is not None:
        acc = report.accuracy
        print(f"accuracy {acc.metric}: {acc.baseline} -> {acc.optimized} (drop {acc.drop})")
    verdict = report.verdict
    print("budget   " + {True: "MET", False: "MISSED", None: "none given"}[verdict.met])
    for reason in verdict.reasons:
        print(f"  - {reason}")


def run(args: argparse.Namespace) -> int:
    steps = None if args.recipe else json.loads(args.steps)
    spec: dict[str, Any] = {}
    if args.benchmark:
        spec["benchmark"] = json.loads(args.benchmark)
    with Client(args.url, args.api_key) as client:
        result: OptimizeResult = client.optimize(
            args.model,
            steps=steps,
            recipe=args.recipe,
            constraints=constraints_of(args) or None,
            spec=spec,
            wait=True,
            out=args.out,
            on_event=show_event,
        )
    if result.job is None:  # the upload was inspected and refused
        print(f"model rejected: {result.model.error}", file=sys.stderr)
    elif result.job.status != "succeeded":
        print(f"job {result.job.status}: {result.job.error}", file=sys.stderr)
    elif result.report is not None:
        summarize(result.report)
        print("files    " + ", ".join(str(path) for path in result.files))
    return result.exit_code


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an ONNX, .pt2 or TorchScript file")
    parser.add_argument("--steps", default='[{"op": "quantize", "mode": "dynamic"}]')
    parser.add_argument("--recipe", choices=["auto"], help="instead of --steps")
    parser.add_argument("--min-cosine", type=float)
    parser.add_argument("--min-speedup", type=float)
    parser.add_argument("--max-size-bytes", type=int)
    parser.add_argument("--max-latency-ms", type=float)
    parser.add_argument("--allow-slower", action="store_true")
    parser.add_argument("--benchmark", help='JSON, e.g. {"batch_sizes": [1, 32]}')
    parser.add_argument("--out", default="dist")
    parser.add_argument("--url", default=os.environ.get("MODELPRESS_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("MODELPRESS_API_KEY"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse(argv))
    except CLIENT_ERRORS as exc:  # a refused request (its problem), no server, a bad file: 3
        print(f"pipeline: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
