"""What static quantization calibrates on: a pre-processed model and an uploaded dataset.

Memory stays bounded: the dataset is asked for at most `calibration_samples` samples, and the
reader hands ONNX Runtime one batch of `CALIBRATION_BATCH` samples at a time. Min-max calibration
reduces each batch to per-tensor ranges inside the graph; for the histogram methods (entropy,
percentile) the quantize pass sets `CalibStridedMinMax` to one batch, or ONNX Runtime would keep
every sample's activations of every tensor until the end (measured on a 3x64x64 CNN, 128 samples:
1.5 GB peak instead of 280 MB, growing with the sample count).

Only numpy here: ONNX Runtime recognises a calibration reader by its `get_next` method.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization.shape_inference import quant_pre_process

from app.core.errors import JobFailure

CALIBRATION_BATCH = 16  # samples per calibration inference


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
    arrays: dict[str, np.ndarray], specs: list[dict[str, Any]], dataset_id: str
) -> CalibrationReader:
    """A reader over the arrays of an uploaded dataset, bound to the model's inputs.

    Raises:
        JobFailure: the dataset does not fit the model's inputs (rank, fixed dims, dtype), or
            holds fewer samples than the model's fixed batch size.
    """
    bound = {spec["name"]: _conform(arrays[spec["name"]], spec, dataset_id) for spec in specs}
    counts = {a.shape[0] for a in bound.values() if a.ndim > 0}
    samples = min(counts, default=1)
    batch = _fixed_batch(specs) or CALIBRATION_BATCH
    if _fixed_batch(specs):
        samples -= samples % batch  # a fixed batch dimension takes whole batches only
    if samples < 1:
        raise JobFailure(
            "invalid_dataset",
            f"Dataset {dataset_id} holds fewer samples than the model's fixed batch size {batch}.",
        )
    return CalibrationReader(bound, batch, samples)


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
    proto = onnx.load(str(model), load_external_data=False)
    before = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if before is None or before >= minimum:
        return model, {}
    try:
        converted = version_converter.convert_version(proto, minimum)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise JobFailure(
            "quantization_failed",
            f"Per-channel int8 needs ONNX opset {minimum}; the model is opset {before} and "
            f"onnx's version converter failed ({type(exc).__name__}: {exc}). Quantize with "
            "`per_channel: false`, or export the model at a newer opset.",
        ) from exc
    out = work_dir / f"opset{minimum}.onnx"
    onnx.save(converted, str(out))
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
