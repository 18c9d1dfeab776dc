"""A job's whole run in the sandbox: steps (or `recipe: auto`), measurement, report, manifest."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from app.core.formats import model_filename
from app.core.storage import sha256_file
from worker import onnx_io
from worker.pipeline.auto import run_auto
from worker.pipeline.job import JobRun, measure_job, prepare, run_steps
from worker.pipeline.timings import Timings
from worker.report.build import (
    REPORT_SCHEMA_VERSION,
    comparison,
    environment,
    verdict,
    write_json,
    write_report,
)
from worker.report.html import render_html
from worker.sandbox.protocol import ArtifactFile, SandboxRequest, SandboxResult

log = logging.getLogger(__name__)
ARCHIVE_NAME = "model.zip"
ARCHIVE_NOTE = (
    "The model keeps its weights in external data (over the size threshold): the artifact "
    "{name} holds {members}; unzip it and open the .onnx beside its data file."
)


def run_pipeline(scratch: Path, request: SandboxRequest) -> SandboxResult:
    """Run a job's spec on its model; returns the artifacts written under `scratch/out`."""
    timings = Timings(request)
    with timings.phase("prepare_s"):
        job = prepare(scratch, request)
    out = scratch / "out"
    out.mkdir()
    extra: dict[str, Any] = {}
    artifacts: list[dict[str, Any]] = []
    with timings.phase("steps_s"):
        if job.spec.recipe == "auto":
            final_path, final_fmt, steps, extra, artifacts = run_auto(job, out)
        else:
            work = scratch / "work"
            final_path, final_fmt, steps = run_steps(job, list(job.spec.steps or []), work)
    with timings.phase("deliver_s"):
        model_name, measured_path, delivery = _deliver(final_path, final_fmt, scratch, out)
    if final_fmt == "tvm":  # the compiler step leaves a runner snippet beside the library
        shutil.copyfile(final_path.parent / "run_tvm.py", out / "run_tvm.py")
        artifacts.append({"name": "run_tvm.py", "kind": "snippet", "media_type": "text/x-python"})
    job.progress.emit(0.9, "measuring original vs optimized")
    log.info("measuring the original and the optimized model (%s)", final_fmt)
    with timings.phase("benchmark_s"):
        measured = measure_job(job, measured_path, final_fmt, timings=timings)
    if delivery["archive"]:
        measured["notes"].append(ARCHIVE_NOTE.format(**delivery))
    with timings.phase("report_s"):
        report = _report(job, measured, steps, extra)
    report["timings"] = timings.report(steps)
    validated = write_report(out / "report.json", report)
    (out / "report.html").write_text(render_html(validated), encoding="utf-8")
    write_json(out / "manifest.json", _manifest(job, report, out / model_name, delivery))
    log.info("report written; verdict: %s", _verdict_line(report["verdict"]))
    job.progress.emit(1.0, "done")
    files = [
        {"name": model_name, "kind": "model", "media_type": delivery["media_type"]},
        {"name": "report.json", "kind": "report", "media_type": "application/json"},
        {"name": "report.html", "kind": "report", "media_type": "text/html"},
        {"name": "manifest.json", "kind": "manifest", "media_type": "application/json"},
        *artifacts,
    ]
    return SandboxResult(
        ok=True,
        artifacts=[ArtifactFile.model_validate(f) for f in files],
        verdict=report["verdict"],
    )


def _verdict_line(verdict: dict[str, Any]) -> str:
    met = {True: "met", False: "missed", None: "no budget"}.get(verdict.get("met"), "?")
    reasons = "; ".join(str(r) for r in verdict.get("reasons") or [])
    return met + (f" ({reasons})" if reasons else "")


def _report(
    job: JobRun, measured: dict[str, Any], steps: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    comp = {**comparison(measured["baseline"], measured["optimized"]), "noise": measured["noise"]}
    threads = job.tools.threads
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "job_id": job.request.job_id,
        "model": job.request.model.public,
        "baseline": measured["baseline"],
        "optimized": measured["optimized"],
        "comparison": comp,
        "fidelity": measured["fidelity"],
        "steps": steps,
        "environment": environment(
            threads,
            job.spec.device,
            sorted({measured[k]["provider"] for k in ("baseline", "optimized")}),
        ),
        "benchmark": {
            **job.spec.benchmark.model_dump(mode="json"),
            "threads": threads,
            "interleaved": True,
            "inputs": job.tools.specs,
        },
        "verdict": verdict(
            job.spec.constraints,
            comp,
            measured["optimized"],
            measured["accuracy"],
            measured["fidelity"],
        ),
        **extra,
    }
    report["verdict"]["notes"] = (
        measured["notes"] + report["verdict"]["notes"] + [w for s in steps for w in s["warnings"]]
    )
    if extra.get("auto_notes"):
        report["verdict"]["notes"] = extra.pop("auto_notes") + report["verdict"]["notes"]
        report.pop("auto_notes", None)
    if measured["accuracy"] is not None:
        report["accuracy"] = measured["accuracy"]
    return report


def _deliver(final: Path, fmt: str, scratch: Path, out: Path) -> tuple[str, Path, dict[str, Any]]:
    """Put the final model under `out`: one file, or, for an ONNX model with external data
    (over the threshold), a stored zip of the `.onnx` and its data file. Returns the artifact's
    name, the path to measure (the unpacked `.onnx` for an archive) and what the manifest says."""
    if fmt == "onnx":
        final = onnx_io.normalize(final, scratch / "final")
        if onnx_io.data_files(final):
            members = onnx_io.write_archive(final, out / ARCHIVE_NAME)
            delivery = {"archive": True, "name": ARCHIVE_NAME, "members": members}
            return ARCHIVE_NAME, final, {**delivery, "media_type": "application/zip"}
    name = model_filename("model", fmt)
    shutil.copyfile(final, out / name)
    delivery = {"archive": False, "name": name, "media_type": "application/octet-stream"}
    return name, out / name, delivery


def _manifest(
    job: JobRun, report: dict[str, Any], model: Path, delivery: dict[str, Any]
) -> dict[str, Any]:
    """What a reader needs to reproduce the job: spec, pass versions, libraries, seeds, hashes."""
    request = job.request
    return {
        "job_id": request.job_id,
        "spec": job.spec.model_dump(mode="json"),
        "passes": [{"op": s["op"], "version": s["pass_version"]} for s in report["steps"]],
        "libraries": report["environment"]["libraries"],
        "seeds": {"benchmark_inputs": "batch size", "fidelity_inputs": "1000 + chunk index"},
        "input_model_sha256": request.model.public["sha256"],
        "datasets_sha256": request.datasets_sha256,
        "outputs": {model.name: sha256_file(model)},
        "model_artifact": {k: v for k, v in delivery.items() if k != "media_type"},
    }
