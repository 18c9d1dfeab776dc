"""The pipeline executor, inside the sandbox: run the steps, measure, write the report."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from app.jobs.schemas import JobCreate
from app.passes.base import PassContext
from app.passes.registry import REGISTRY
from worker import measure
from worker.progress import Progress
from worker.report import (
    REPORT_SCHEMA_VERSION,
    comparison,
    environment,
    sha256_of,
    verdict,
    write_json,
)
from worker.report_html import render_html

MODEL_EXTENSIONS = {"onnx": "onnx", "torchscript": "pt", "pt2": "pt2"}


def _run_steps(
    spec: JobCreate,
    source: Path,
    fmt: str,
    scratch: Path,
    request: dict[str, Any],
    progress: Progress,
) -> tuple[Path, str, list[dict[str, Any]]]:
    current, current_fmt, steps = source, fmt, []
    total = len(spec.steps) + 1
    datasets = {k: scratch / v for k, v in request.get("datasets", {}).items()}
    for index, step in enumerate(spec.steps):
        pass_ = REGISTRY.for_config(step)
        progress.emit(index / total, f"step {index + 1}/{len(spec.steps)}: {pass_.name}", index)
        work = scratch / "work" / f"step{index}"
        work.mkdir(parents=True)
        ctx = PassContext(
            input_path=current,
            input_format=current_fmt,
            work_dir=work,
            step_index=index,
            threads=int(request["threads"]),
            device=spec.device,
            datasets=datasets,
            original_path=source,
        )
        started = time.perf_counter()
        result = pass_.run(ctx, step)
        steps.append(
            {
                "op": pass_.name,
                "config": step.model_dump(mode="json"),
                "pass_version": pass_.version,
                "wall_s": round(time.perf_counter() - started, 4),
                "input_format": current_fmt,
                "output_format": result.output_format,
                "metrics": result.metrics,
                "warnings": result.warnings,
            }
        )
        current, current_fmt = result.output_path, result.output_format
    return current, current_fmt, steps


def _measure(
    spec: JobCreate, source: Path, final: Path, request: dict[str, Any], scratch: Path
) -> dict[str, Any]:
    threads = int(request["threads"])
    datasets = {k: scratch / v for k, v in request.get("datasets", {}).items()}
    notes: list[str] = []
    baseline, optimized = measure.static_facts(source), measure.static_facts(final)
    pair = measure.Pair(source, final, threads)
    lat = measure.latency(pair, spec, notes)
    for label, facts in (("baseline", baseline), ("optimized", optimized)):
        facts["load_ms"] = round(pair.load_ms[label], 3)
        facts["session_rss_bytes"] = pair.rss_delta[label]
        facts["latency_ms"] = lat[label]
        facts["throughput"] = {b: s["throughput"] for b, s in lat[label].items()}
    fidelity, accuracy = measure.fidelity_and_accuracy(pair, spec, datasets)
    return {
        "baseline": baseline,
        "optimized": optimized,
        "fidelity": fidelity,
        "accuracy": accuracy,
        "notes": notes,
        "inputs": pair.inputs,
    }


def run_pipeline(scratch: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Run a job's spec on its model; returns the artifacts written under `scratch/out`."""
    spec = JobCreate.model_validate(request["spec"])
    progress = Progress(scratch)
    source = scratch / request["model"]["path"]
    final_path, final_fmt, steps = _run_steps(
        spec, source, request["model"]["format"], scratch, request, progress
    )
    out = scratch / "out"
    out.mkdir()
    model_name = f"model.{MODEL_EXTENSIONS[final_fmt]}"
    shutil.copyfile(final_path, out / model_name)
    progress.emit(len(spec.steps) / (len(spec.steps) + 1), "measuring original vs optimized")
    measured = _measure(spec, source, out / model_name, request, scratch)
    comp = comparison(measured["baseline"], measured["optimized"])
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "job_id": request["job_id"],
        "model": request["model"]["public"],
        "baseline": measured["baseline"],
        "optimized": measured["optimized"],
        "comparison": comp,
        "fidelity": measured["fidelity"],
        "steps": steps,
        "environment": environment(int(request["threads"])),
        "benchmark": {
            **spec.benchmark.model_dump(mode="json"),
            "threads": int(request["threads"]),
            "interleaved": True,
            "inputs": measured["inputs"],
        },
        "verdict": verdict(spec.constraints, comp, measured["optimized"], measured["accuracy"]),
    }
    report["verdict"]["notes"] = measured["notes"] + report["verdict"]["notes"]
    if measured["accuracy"] is not None:
        report["accuracy"] = measured["accuracy"]
    write_json(out / "report.json", report)
    (out / "report.html").write_text(render_html(report))
    write_json(out / "manifest.json", _manifest(spec, request, report, out / model_name, scratch))
    progress.emit(1.0, "done")
    return {
        "artifacts": [
            {"name": model_name, "kind": "model", "media_type": "application/octet-stream"},
            {"name": "report.json", "kind": "report", "media_type": "application/json"},
            {"name": "report.html", "kind": "report", "media_type": "text/html"},
            {"name": "manifest.json", "kind": "manifest", "media_type": "application/json"},
        ],
        "verdict": report["verdict"],
    }


def _manifest(
    spec: JobCreate, request: dict[str, Any], report: dict[str, Any], model: Path, scratch: Path
) -> dict[str, Any]:
    """What a reader needs to reproduce the job: spec, pass versions, libraries, seeds, hashes."""
    return {
        "job_id": request["job_id"],
        "spec": spec.model_dump(mode="json"),
        "passes": [{"op": s["op"], "version": s["pass_version"]} for s in report["steps"]],
        "libraries": report["environment"]["libraries"],
        "seeds": {"benchmark_inputs": "batch size", "fidelity_inputs": "1000 + chunk index"},
        "input_model_sha256": request["model"]["public"]["sha256"],
        "datasets_sha256": request.get("datasets_sha256", {}),
        "outputs": {model.name: sha256_of(model)},
    }
