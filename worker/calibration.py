"""What static quantization calibrates on: a pre-processed model and an uploaded dataset.

Memory stays bounded: the dataset is asked for at most `calibration_samples` samples, and the
reader hands ONNX Runtime one batch at a time: `CALIBRATION_BATCH` samples, fewer where one
batch's inputs and activations would pass `CALIBRATION_BATCH_BYTES` (`calibration_batch`).
Min-max calibration reduces each batch to per-tensor ranges inside the graph; for the histogram
methods (entropy, percentile) the quantize pass sets `CalibStridedMinMax` to one batch, or ONNX
Runtime would keep every sample's activations of every tensor until the end (measured on a
3x64x64 CNN, 128 samples: 1.5 GB peak instead of 280 MB, growing with the sample count).

The reader itself is only numpy: ONNX Runtime recognises a calibration reader by its `get_next`
method.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization.shape_inference import quant_pre_process

from app.core.errors import JobFailure
from worker import onnx_io

CALIBRATION_BATCH = 16  # samples per calibration inference, at most
# The most one calibration batch may cost, estimated (`sample_bytes`: its inputs and every
# intermediate tensor). ONNX Runtime's calibrator runs the graph with every tensor exposed, and
# its peak grows with their sum times the batch. Measured on the PP-OCRv4 detector at 3x640x640
# (0.65 GiB estimated per sample), static min-max of 32 samples, peak RSS / address space: batch
# 16: 18.4 / 28.5 GB (past a 12 GB sandbox), 4: 5.2 / 9.1 GB, 2: 3.0 / 5.8 GB, 1: 1.8 / 3.7 GB;
# about 1.7x the estimate in RSS per sample. 1.5 GiB gives it batch 2 (and 16 s instead of 81 s)
# while an encoder at sequence 128 (45 MiB estimated) keeps 16.
CALIBRATION_BATCH_BYTES = 3 * 2**29  # 1.5 GiB


class CalibrationReader:
    """ONNX Runtime's `CalibrationDataReader` protocol over arrays bound to the model's inputs."""

    def __init__(self, arrays: dict[str, np.ndarray], batch: int, samples: int) -> None:
        self.arrays, self.batch, self.samples = arrays, batch, samples
        self._batches = iter(range(len(self)))

    def __len__(self) -> int:
        return -(-self.samples // self.batch)

    @property
    def batch_size(self) -> int:
        return self.batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Every batch from the first (ONNX Runtime's GPTQ iterates a copy of the reader)."""
        self.rewind()
        return iter(self.get_next, None)

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._batches = iter(range(len(self)))

    def set_range(self, start_index: int, end_index: int) -> None:
        """Iterate over batches `[start_index, end_index)` (ONNX Runtime's strided calibration)."""
        self._batches = iter(range(start_index, min(end_index, len(self))))

    def get_next(self) -> dict[str, np.ndarray] | None:
        index = next(self._batches, None)
        if index is None:
            return None
        start, stop = index * self.batch, min((index + 1) * self.batch, self.samples)
        return {
            name: array if array.ndim == 0 else array[start:stop]
            for name, array in self.arrays.items()
        }


def calibration_reader(
    arrays: dict[str, np.ndarray],
    specs: list[dict[str, Any]],
    dataset_id: str,
    model: Path | None = None,
) -> CalibrationReader:
    """A reader over the arrays of an uploaded dataset, bound to the model's inputs; with the
    `model` given, its batch follows the input size (`calibration_batch`).

    Raises:
        JobFailure: the dataset does not fit the model's inputs (rank, fixed dims, dtype), or
            holds fewer samples than the model's fixed batch size.
    """
    bound = {spec["name"]: _conform(arrays[spec["name"]], spec, dataset_id) for spec in specs}
    counts = {a.shape[0] for a in bound.values() if a.ndim > 0}
    samples = min(counts, default=1)
    batch = _fixed_batch(specs) or calibration_batch(model, bound)
    if _fixed_batch(specs):
        samples -= samples % batch  # a fixed batch dimension takes whole batches only
    if samples < 1:
        raise JobFailure(
            "invalid_dataset",
            f"Dataset {dataset_id} holds fewer samples than the model's fixed batch size {batch}.",
        )
    return CalibrationReader(bound, batch, samples)


def calibration_batch(model: Path | None, arrays: dict[str, np.ndarray]) -> int:
    """Samples per calibration inference: `CALIBRATION_BATCH` (batching is faster), fewer where
    one batch's estimated memory (`sample_bytes`) would pass `CALIBRATION_BATCH_BYTES`: large
    images calibrated 16 at a time ran a 12 GB sandbox out of memory."""
    if model is None:
        return CALIBRATION_BATCH
    per_sample = sample_bytes(model, arrays)
    return max(1, min(CALIBRATION_BATCH, CALIBRATION_BATCH_BYTES // max(1, per_sample)))


def sample_bytes(model: Path, arrays: dict[str, np.ndarray]) -> int:
    """Estimated bytes one calibration sample costs: its inputs plus every intermediate tensor,
    sized by ONNX shape inference at the dataset's shapes (batch 1). A tensor it leaves unsized
    counts as much as the largest one sized or fed, not zero: on the real MiniLM export (seq 128)
    it sizes 289 of 526 tensors and this estimates 45 MiB, against 77 MiB measured."""
    inputs = {k: v[:1] if v.ndim else v for k, v in arrays.items()}
    proto = onnx.load(str(model), load_external_data=False)
    outputs = {o for node in proto.graph.node for o in node.output if o}
    sized = _tensor_bytes(proto, {k: v.shape for k, v in inputs.items()})
    fed = [int(v.nbytes) for v in inputs.values()]
    largest = max([*fed, *sized.values()], default=0)
    return sum(fed) + sum(sized.values()) + len(outputs - sized.keys()) * largest


def _tensor_bytes(proto: Any, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Bytes of each tensor ONNX shape inference sizes fully, with the inputs fixed to `shapes`
    ({} where inference fails: every tensor is then guessed by the caller)."""
    graph = proto.graph
    for value in graph.input:
        if value.name in shapes and value.type.tensor_type.HasField("shape"):
            for dim, size in zip(
                value.type.tensor_type.shape.dim, shapes[value.name], strict=False
            ):
                dim.dim_value = int(size)  # replaces a dim_param (same oneof)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # onnx raises several types; an estimate without it is still bounded
        return {}
    sizes = {}
    for value in [*inferred.value_info, *inferred.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        itemsize = _itemsize(tensor.elem_type)
        if tensor.HasField("shape") and min(dims, default=0) >= 0 and itemsize:
            sizes[value.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    return sizes


def _itemsize(elem_type: int) -> int | None:
    """Bytes per element of an ONNX element type (None for one numpy cannot name: guessed)."""
    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize) if elem_type else None
    except (KeyError, ValueError, TypeError):
        return None


def _fixed_batch(specs: list[dict[str, Any]]) -> int | None:
    shape = specs[0].get("shape") if specs else None
    return shape[0] if shape and isinstance(shape[0], int) else None


def _conform(array: np.ndarray, spec: dict[str, Any], dataset_id: str) -> np.ndarray:
    """The array in the input's dtype, checked against its declared rank and fixed dims; a
    compact copy, so the dataset's full array is not kept alive by a view."""
    name, shape, dtype = spec["name"], spec.get("shape"), np.dtype(spec["dtype"])
    if shape is not None and array.ndim != len(shape):
        raise JobFailure(
            "invalid_dataset",
            f"Dataset {dataset_id}: array for input {name!r} has shape {list(array.shape)}; the "
            f"model takes rank {len(shape)} ({shape}), samples on the first axis.",
        )
    fixed = {i: d for i, d in enumerate(shape or []) if i > 0 and isinstance(d, int)}
    wrong = {i: d for i, d in fixed.items() if array.shape[i] != d}
    if wrong:
        raise JobFailure(
            "invalid_dataset",
            f"Dataset {dataset_id}: array for input {name!r} has shape {list(array.shape)}; the "
            f"model's input is {shape}.",
        )
    if not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise JobFailure(
            "invalid_dataset",
            f"Dataset {dataset_id}: array for input {name!r} is {array.dtype}; the model "
            f"takes {dtype}.",
        )
    return np.array(array, dtype=dtype, copy=True)


PER_CHANNEL_MIN_OPSET = 13  # DequantizeLinear has no `axis` before opset 13


def upgrade_opset(model: Path, work_dir: Path, minimum: int) -> tuple[Path, dict[str, Any]]:
    """The model at opset `minimum` or later (converted by onnx's version converter if older).

    Raises:
        JobFailure: the converter cannot bring the model to that opset.
    """
    proto = onnx_io.load_model(model)  # with its external data: the converted copy moves folder
    before = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if before is None or before >= minimum:
        return model, {}
    out = work_dir / f"opset{minimum}.onnx"
    try:
        onnx_io.save_model(onnx_io.convert_opset(proto, minimum), out)
        onnx.checker.check_model(str(out))  # by path: a proto over 2 GiB cannot be checked
    except Exception as exc:
        raise JobFailure(
            "quantization_failed",
            f"Per-channel int8 needs ONNX opset {minimum}; the model is opset {before} and "
            f"onnx's version converter failed ({type(exc).__name__}: {exc}). Quantize with "
            "`per_channel: false`, or export the model at a newer opset.",
        ) from exc
    return out, {"opset_before": before, "opset": minimum}


def preprocess(model: Path, work_dir: Path) -> tuple[Path, list[str]]:
    """ONNX Runtime's recommended pre-processing (shape inference, graph cleanup) before
    calibration: the model to quantize, and warnings. Its symbolic shape inference fails on some
    real exports (docs/field-notes.md): then it runs without it; a model it still fails on is
    used as it is."""
    out = work_dir / "preprocessed.onnx"
    errors = []
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(model), str(out), skip_symbolic_shape=skip_symbolic)
        except Exception as exc:  # a failure only costs the pre-processing, not the step
            out.unlink(missing_ok=True)
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if skip_symbolic:
            return out, [
                f"quant_pre_process's symbolic shape inference failed ({errors[0][:300]}); "
                "pre-processed without it."
            ]
        return out, []
    return model, [
        f"quant_pre_process failed ({errors[-1][:300]}); quantized the model without "
        "pre-processing."
    ]
