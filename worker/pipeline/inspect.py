"""Deep inspection of an uploaded model, inside the sandbox: can it load, what is its signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.errors import JobFailure
from worker.onnx_io import stage
from worker.ort import load_checked, make_session, opset_of, parameter_counts, signature
from worker.runtimes.torch_programs import inspect_torch
from worker.sandbox.protocol import SandboxRequest


def inspect_onnx(path: Path, threads: int, bundled: bool = False) -> dict[str, Any]:
    """Check an ONNX file and open it in ONNX Runtime (a malformed graph may crash the child,
    which the supervisor reports as `loader_crashed`); `bundled`: extracted from an archive, its
    external data checked to lie inside its folder."""
    model = load_checked(path, bundled)
    params, _nonzero = parameter_counts(model, path.parent)
    try:
        session, _ms = make_session(path, threads)
    except Exception as exc:
        raise JobFailure("model_rejected", f"ONNX Runtime cannot load the model: {exc}") from exc
    inputs, outputs = signature(session)
    if not inputs:
        raise JobFailure("model_rejected", "The model has no inputs.")
    return {
        "inputs": inputs,
        "outputs": outputs,
        "parameter_count": params,
        "opset": opset_of(model),
    }


def inspect_model(scratch: Path, request: SandboxRequest) -> dict[str, Any]:
    """The inspection result for the model in `request` (paths relative to `scratch`)."""
    path, fmt, threads = scratch / request.model.path, request.model.format, request.threads
    if fmt == "onnx":
        onnx_path, bundled = stage(path)  # an archive is extracted into the scratch here
        return inspect_onnx(onnx_path, threads, bundled)

    return inspect_torch(path, fmt, request.model.input_shapes, threads)
