"""ONNX helpers used inside the sandbox: safe loading, signatures, parameter counts, sessions."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

from app.core.errors import JobFailure
from worker import onnx_io

ALLOWED_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def load_checked(path: Path, bundled: bool = False) -> Any:
    """Load an ONNX file refusing unknown op domains, then run the checker. External data: a
    `bundled` model (extracted from an uploaded archive, or a pass's output) may reference files
    inside its own folder only, which are checked but not read; a bare upload may reference none.

    Raises:
        JobFailure: `model_rejected` with the reason, `external_data_not_supported` or
            `external_data_path`.
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise JobFailure("model_rejected", f"Not a loadable ONNX model: {exc}") from exc
    if not bundled:
        onnx_io.refuse_external(model)
    elif onnx_io.has_external_data(model):
        onnx_io.check_external_refs(model, path.parent)  # the data stays on disk (any size)
    # The domains nodes use (ORT's optimizer lists every domain it knows among the imports).
    unknown = sorted({n.domain for n in model.graph.node} - ALLOWED_DOMAINS)
    if unknown:
        raise JobFailure("model_rejected", f"Custom operator domains are not allowed: {unknown}.")
    try:
        # By path when bundled: the checker then reads external data and allows over 2 GiB.
        onnx.checker.check_model(str(path) if bundled else model)
    except Exception as exc:
        raise JobFailure("model_rejected", f"The ONNX checker refused the model: {exc}") from exc
    return model


SHAPE_TYPES = (TensorProto.INT64, TensorProto.INT32)


def weight_tensors(model: Any) -> Iterator[Any]:
    """The graph's weights: every initializer and every `Constant` tensor but the int32/int64
    ones, which are shape arithmetic (int8 weights of a quantized model do count). Constants
    count because some exporters (paddle2onnx, e.g. PP-OCR) store every weight in `Constant`
    nodes: counting initializers alone gave 0 parameters for such a model."""
    constants = (
        attr.t
        for node in model.graph.node
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx")
        for attr in node.attribute
        if attr.name == "value"
    )
    for tensor in itertools.chain(model.graph.initializer, constants):
        if tensor.data_type not in SHAPE_TYPES:
            yield tensor


def parameter_counts(model: Any, base_dir: Path | None = None) -> tuple[int, int]:
    """(elements, non-zero elements) of the graph's weights (`weight_tensors`). External data is
    read from `base_dir` one tensor at a time (checked by `load_checked` first)."""
    total = nonzero = 0
    for tensor in weight_tensors(model):
        array = numpy_helper.to_array(tensor, str(base_dir) if base_dir else "")
        total += int(array.size)
        nonzero += int((array != 0).sum())
    return total, nonzero


def opset_of(model: Any) -> int | None:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return None


def providers_for(device: str) -> list[str]:
    """ONNX Runtime providers for a device: CUDA first where this onnxruntime has it."""
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _keeps_data_apart(path: Path) -> bool:
    """Whether ONNX Runtime's optimized copy of `path` must write its weights to a data file."""
    return onnx_io.is_large(path) or bool(onnx_io.data_files(path))


def session(
    model: Path | str | bytes,
    threads: int,
    device: str = "cpu",
    *,
    level: str | None = None,
    optimized_path: Path | None = None,
    profile_prefix: Path | None = None,
) -> ort.InferenceSession:
    """The one way ModelPress opens ONNX Runtime: fixed threads, sequential, quiet.

    Args:
        model: a path, or a serialized ModelProto.
        level: `basic` or `extended` graph optimization (default: ONNX Runtime's default, all).
        optimized_path: where ONNX Runtime writes the graph it optimized (offline optimization).
        profile_prefix: turn ONNX Runtime's profiler on, writing under this prefix.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if level is not None:
        options.graph_optimization_level = LEVELS[level]
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
        if not isinstance(model, bytes) and _keeps_data_apart(Path(model)):
            # Over the threshold the optimized graph keeps its weights in a data file beside it
            # (one protobuf cannot hold over 2 GiB); and so does a model that has external data
            # at all, which ONNX Runtime would otherwise write still pointing at the input's
            # data file, relative to a folder that does not hold it.
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name",
                optimized_path.name + onnx_io.DATA_SUFFIX,
            )
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
            )
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers_for(device))


def make_session(path: Path, threads: int, device: str = "cpu") -> tuple[Any, float]:
    """A session on `path` and its load time in ms."""
    start = time.perf_counter()
    opened = session(path, threads, device)
    return opened, (time.perf_counter() - start) * 1000


def signature(session: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs as `{name, dtype, shape}` (symbolic dims as their names)."""

    def spec(arg: Any) -> dict[str, Any]:
        shape = [d if isinstance(d, int) else (str(d) if d else None) for d in (arg.shape or [])]
        return {"name": arg.name, "dtype": ORT_TYPES.get(arg.type, arg.type), "shape": shape}

    return [spec(i) for i in session.get_inputs()], [spec(o) for o in session.get_outputs()]
