"""One way to run any model format on numpy feeds: ONNX Runtime for ONNX, torch for the rest."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import JobFailure
from worker.measure.benchmark import rss_bytes
from worker.ort import make_session, signature


@dataclass
class Loaded:
    """A model ready to run: `run(feeds) -> outputs` plus what loading it cost."""

    path: Path
    format: str
    runtime: str
    run: Any
    load_ms: float
    rss_delta_bytes: int
    inputs: list[dict[str, Any]]
    outputs: list[str]
    program: Any = None
    provider: str = "cpu"


def load(
    path: Path, fmt: str, specs: list[dict[str, Any]], threads: int, device: str = "cpu"
) -> Loaded:
    """Load `path` in its runtime on `device`; `specs` give the input order for torch."""
    before = rss_bytes()
    if fmt == "onnx":
        session, load_ms = make_session(path, threads, device)
        inputs, outputs = signature(session)
        return Loaded(
            path,
            fmt,
            "onnxruntime",
            _runner(session, inputs),
            load_ms,
            rss_bytes() - before,
            inputs,
            [o["name"] for o in outputs],
            provider=session.get_providers()[0],
        )
    if fmt == "tvm":
        return _load_tvm(path, specs, before)

    # Here, not at the top: a memory probe of an ONNX model (its own process) imports no torch.
    from worker.runtimes.torch_programs import TorchRunner, load_program

    start = time.perf_counter()
    module, program = load_program(path, fmt)
    runner = TorchRunner(module, specs, threads, device)
    load_ms = (time.perf_counter() - start) * 1000
    return Loaded(
        path,
        fmt,
        "torch",
        runner,
        load_ms,
        rss_bytes() - before,
        specs,
        [],
        program,
        provider=f"torch-{device}",
    )


def _load_tvm(path: Path, specs: list[dict[str, Any]], before: int) -> Loaded:
    """A library compiled by the `export format: tvm` step, on the Relax virtual machine."""
    import tvm
    from tvm import relax

    start = time.perf_counter()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    names = [s["name"] for s in specs]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = vm["main"](
            *[tvm.runtime.tensor(np.ascontiguousarray(feeds[n]), tvm.cpu()) for n in names]
        )
        return [o.numpy() for o in ([out] if hasattr(out, "numpy") else list(out))]

    load_ms = (time.perf_counter() - start) * 1000
    return Loaded(
        path, "tvm", "tvm", run, load_ms, rss_bytes() - before, specs, [], provider="tvm-llvm"
    )


def _runner(session: Any, inputs: list[dict[str, Any]]) -> Any:
    """`session.run` on feeds cast to the model's declared input types (a model converted with
    `keep_io_types: false` takes float16 where the original took float32)."""
    declared = {i["name"]: i["dtype"] for i in inputs}

    def run(feeds: dict[str, np.ndarray]) -> Any:
        cast = {
            k: v.astype(declared[k]) if k in declared and v.dtype.name != declared[k] else v
            for k, v in feeds.items()
        }
        return session.run(None, cast)

    return run


def run_batched(
    loaded: Loaded, feeds: dict[str, np.ndarray], batch: int, fixed: bool
) -> list[np.ndarray]:
    """Run `feeds` in chunks of `batch` samples, outputs concatenated; a fixed-batch model gets
    whole batches only (the remainder is left out)."""
    n = len(next(iter(feeds.values())))
    stop = n - n % batch if fixed else n
    if stop == 0:
        raise JobFailure("dataset_too_small", f"The model needs batches of {batch} samples.")
    chunks = [
        loaded.run({k: v[start : start + batch] for k, v in feeds.items()})
        for start in range(0, stop, batch)
    ]
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
