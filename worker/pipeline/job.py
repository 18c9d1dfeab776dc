"""One job in the sandbox: its spec and tools, its steps in order, original vs result measured."""

from __future__ import annotations

import logging
import resource
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.core.errors import JobFailure
from app.jobs.schemas import JobCreate, accuracy_drop_target
from app.passes.spec import plan
from worker import onnx_io
from worker.measure import memprobe
from worker.measure import pair as measure
from worker.measure.inputs import onnx_vocab
from worker.passes.base import AccuracyTarget
from worker.passes.registry import PASSES
from worker.pipeline.timings import Timings
from worker.pipeline.tools import WorkerTools
from worker.runtimes import loaded as runtimes
from worker.runtimes.torch_programs import load_program, vocab_sizes
from worker.sandbox.progress import Progress
from worker.sandbox.protocol import SandboxRequest

log = logging.getLogger(__name__)


def _vocab(source: Path, fmt: str) -> dict[str, int]:
    """Which inputs index an embedding table (their ids must stay below its row count)."""
    if fmt == "onnx":
        return onnx_vocab(source)
    if fmt == "pt2":
        return vocab_sizes(load_program(source, fmt)[1])
    return {}


@dataclass
class JobRun:
    """The sandbox side of one job: its spec, files, tools and progress."""

    spec: JobCreate
    request: SandboxRequest
    scratch: Path
    source: Path
    fmt: str
    tools: WorkerTools
    datasets: dict[str, Path]
    progress: Progress


def _check_device(device: str) -> None:
    if device != "cuda":
        return

    if not torch.cuda.is_available():
        raise JobFailure("device_unavailable", "The job asks for CUDA; this worker has no GPU.")


def prepare(scratch: Path, request: SandboxRequest) -> JobRun:
    spec = JobCreate.model_validate(request.spec)
    _check_device(spec.device)
    source, fmt = scratch / request.model.path, request.model.format
    if fmt == "onnx":
        source, _bundled = onnx_io.stage(source)  # an uploaded archive: its extracted .onnx
    datasets = {k: scratch / v for k, v in request.datasets.items()}
    tools = WorkerTools(
        request.model.inputs,
        _vocab(source, fmt),
        spec.benchmark.input_shapes,
        request.threads,
        datasets,
    )
    return JobRun(spec, request, scratch, source, fmt, tools, datasets, Progress(scratch))


def _accuracy_target(spec: JobCreate) -> AccuracyTarget | None:
    """The job's `max_accuracy_drop` on its evaluation dataset and metric, where it has both."""
    drop = accuracy_drop_target(spec)
    if drop is None or spec.evaluation is None:
        return None
    return AccuracyTarget(drop, spec.evaluation.dataset_id, spec.evaluation.metric)


def run_steps(
    job: JobRun, steps: list[Any], work_root: Path, span: tuple[float, float] = (0.0, 0.9)
) -> tuple[Path, str, list[dict[str, Any]]]:
    """Run `steps` (plus implicit conversions) from the original; files under `work_root`."""
    current, current_fmt, records = job.source, job.fmt, []
    planned = plan(steps, job.fmt)
    for index, item in enumerate(planned):
        pass_ = PASSES.for_config(item.config)
        fraction = span[0] + (span[1] - span[0]) * index / len(planned)
        job.progress.emit(fraction, f"step {index + 1}/{len(planned)}: {pass_.name}", index)
        work = work_root / f"step{index}"
        work.mkdir(parents=True)
        ctx = job.tools.context(
            current,
            current_fmt,
            work,
            step_index=index,
            device=job.spec.device,
            original_path=job.source,
            original_format=job.fmt,
            target_cosine=job.spec.constraints.min_cosine if job.spec.constraints else None,
            target_accuracy=_accuracy_target(job.spec),
            speed_batches=tuple(job.spec.benchmark.batch_sizes),
        )
        job.progress.step(index, pass_.name, "started")
        log.info("step %d/%d %s started", index + 1, len(planned), pass_.name)
        started = time.perf_counter()
        result = pass_.run(ctx, item.config)
        wall_s = round(time.perf_counter() - started, 4)
        job.progress.step(index, pass_.name, "finished", wall_s)
        log.info("step %d/%d %s finished in %.3f s", index + 1, len(planned), pass_.name, wall_s)
        records.append(
            {
                "op": pass_.name,
                "implicit": item.implicit,
                "spec_step": item.user_index,
                "config": item.config.model_dump(mode="json"),
                "pass_version": pass_.version,
                "wall_s": wall_s,
                "input_format": current_fmt,
                "output_format": result.output_format,
                "metrics": result.metrics,
                "warnings": result.warnings,
                **({"sensitivity": result.sensitivity} if result.sensitivity is not None else {}),
            }
        )
        current, current_fmt = result.output_path, result.output_format
    return current, current_fmt, records


CONTROL_MARGIN = 8  # address space per byte of model file the noise control may assume (see below)


def control_fits(model_bytes: int) -> bool:
    """Whether a second copy of the original (the noise control) fits the child's memory:
    original, optimized and control loaded at once, with room for the runtimes' reservations
    and activations. `RLIMIT_AS` counts address space, which ONNX Runtime and torch reserve far
    beyond what they touch, so the margin is wide: 8x the file (a 12 GiB cap takes models up to
    1.5 GiB, the 650 MB LLM included); 4 GiB where there is no cap, as for CUDA children."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    budget = 4 * 1024**3 if limit in (resource.RLIM_INFINITY, -1) else limit
    return CONTROL_MARGIN * model_bytes <= budget


def measure_job(
    job: JobRun, final: Path, final_fmt: str, full: bool = True, timings: Timings | None = None
) -> dict[str, Any]:
    """Original vs `final`, measured side by side; `full` adds noise control and peak memory.
    `timings` gets the time of each part (loading, latency, memory probes, fidelity)."""
    clock = timings.bench if timings is not None else _untimed
    spec, source, request, tools, datasets = (
        job.spec,
        job.source,
        job.request,
        job.tools,
        job.datasets,
    )
    if not full:
        bench = spec.benchmark.model_copy(update={"noise_control": False, "memory": False})
        spec = spec.model_copy(update={"benchmark": bench})
    notes: list[str] = []
    fmts = {"baseline": job.fmt, "optimized": final_fmt}
    paths = {"baseline": source, "optimized": final}
    device = spec.device
    with clock("load_s"):
        loaded = {
            k: runtimes.load(paths[k], fmts[k], tools.specs, tools.threads, device) for k in paths
        }
    vocab = dict(tools.vocab)
    if fmts["optimized"] == "onnx":
        vocab = {**onnx_vocab(final), **vocab}
    pair = measure.Pair(loaded, tools.specs, vocab)
    sizes = measure.batch_sizes(pair, spec, notes)
    control = None
    if spec.benchmark.noise_control and control_fits(source.stat().st_size):
        with clock("noise_control_load_s"):
            control = runtimes.load(source, fmts["baseline"], tools.specs, tools.threads, device)
    elif spec.benchmark.noise_control:
        notes.append(
            "No noise control: a second copy of the original does not fit the job's memory, so "
            "any measured slowdown counts as beyond the noise."
        )
    with clock("latency_s"):
        lat = measure.latency(pair, spec, sizes, control)
    # The peak-memory probes start once the timing is over and run beside the fidelity runs:
    # each is a process of its own, and neither they nor fidelity time anything.
    probes = {
        label: _start_memory(spec, loaded[label], tools, vocab, max(sizes)) for label in loaded
    }
    try:
        outputs = [o["name"] for o in request.model.outputs]
        with clock("fidelity_s"):
            fidelity, accuracy = measure.fidelity_and_accuracy(pair, spec, datasets, outputs, notes)
        facts = {}
        for label in measure.LABELS:
            facts[label] = measure.static_facts(loaded[label])
            facts[label]["latency_ms"] = lat[label]
            facts[label]["throughput"] = {b: s["throughput"] for b, s in lat[label].items()}
            with clock("memory_wait_s"):
                facts[label]["memory"] = _finish_memory(probes.pop(label), max(sizes))
    finally:
        for started in probes.values():  # a failure above: no probe outlives the measurement
            if started is not None:
                started.kill()
                started.wait()
    if device == "cuda" and any(x.provider in ("CPUExecutionProvider",) for x in loaded.values()):
        notes.append(
            "This worker's ONNX Runtime has no CUDA provider: the ONNX model(s) were measured on "
            "the CPU (install onnxruntime-gpu on CUDA workers)."
        )
    if fmts["baseline"] != fmts["optimized"]:
        notes.append(
            f"The original ran in {loaded['baseline'].runtime} ({fmts['baseline']}), the result "
            f"in {loaded['optimized'].runtime} ({fmts['optimized']}), on the same inputs."
        )
    return {
        **facts,
        "noise": measure.noise(lat) if control is not None else None,
        "fidelity": fidelity,
        "accuracy": accuracy,
        "notes": notes,
    }


@contextmanager
def _untimed(_name: str) -> Iterator[None]:
    yield


def _start_memory(
    spec: JobCreate, loaded: runtimes.Loaded, tools: WorkerTools, vocab: dict[str, int], batch: int
) -> subprocess.Popen[str] | None:
    if not spec.benchmark.memory:
        return None
    feeds = {
        "batch": batch,
        "shapes": spec.benchmark.input_shapes,
        "vocab": vocab,
        "threads": tools.threads,
        "device": spec.device,
    }
    return memprobe.start(loaded.path, loaded.format, tools.specs, feeds)


def _finish_memory(probe: subprocess.Popen[str] | None, batch: int) -> dict[str, Any]:
    if probe is None:
        return {"peak_rss_bytes": None, "note": "not measured (benchmark.memory is false)"}
    return {
        "peak_rss_bytes": memprobe.peak_of(probe),
        "measured_in": f"a process of its own: load, then {memprobe.RUNS} runs at batch {batch}",
    }
