"""`distill`: knowledge distillation from the original model (teacher) into the current one.

The teacher is the upload, run in its own runtime (onnxruntime for ONNX, torch's restricted
loaders for TorchScript and `.pt2`), once, over the whole dataset: it gives outputs only. The
student is the current ONNX model, converted with our own `OnnxModule` (app/passes/onnx_torch.py)
and trained with Adam on CPU (or CUDA when the job asks and one is present), then written back
into the same ONNX graph: same nodes, same initializer names, dtypes and shapes.

Losses. A classifier output (2-D float logits; probabilities are detected and turned into
log-probabilities) is matched with Hinton's soft loss, KL(teacher || student) on logits divided
by `temperature`, times T^2 so its gradients keep their scale across temperatures; any other float
output with the mean squared error to the teacher's. With labels, the first classifier output also
gets cross-entropy on them, weighted `1 - alpha`; without labels, `alpha` is 1.

BatchNormalization stays in its inference form (running statistics fixed, scale and shift train):
user datasets are often small, batch statistics of small batches are noisy, and the exported
graph has no training-mode BatchNormalization to hand the updated statistics to anyway (dynamo
exports fold it into the convolutions). Dropout is the identity, as in the exported graph.

Every number is measured on a held-out split of the dataset (a seeded random `validation_split`),
before and after training, on the ONNX files themselves with onnxruntime: teacher-student top-1
agreement for classifiers (mean cosine similarity otherwise) and accuracy against labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnx import helper

from app.core.errors import JobFailure
from app.passes.distill import (
    DistillConfig,
    DistillTechnique,
)
from worker import onnx_io
from worker.onnx_to_torch.module import to_torch, write_back
from worker.ort import session as ort_session
from worker.passes.base import Pass, PassContext, PassResult
from worker.training import Data, Task, agreement, inference_chunk, train

CHECK_SAMPLES = 256  # samples on which the written model is compared with the trained module


CHECK_TOL = 1e-4  # |onnxruntime - torch| <= CHECK_TOL + CHECK_TOL * |torch|


ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class DistillPass(Pass[DistillConfig]):
    technique = DistillTechnique()

    def run(self, ctx: PassContext, config: DistillConfig) -> PassResult:
        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, ctx.threads))
        try:
            return _distill(ctx, config)
        finally:
            torch.set_num_threads(previous)


def _distill(ctx: PassContext, config: DistillConfig) -> PassResult:
    torch.manual_seed(config.seed)
    warnings: list[str] = []
    proto = onnx_io.load_model(ctx.input_path)
    module = to_torch(proto)  # unsupported ops fail here, before any costly work
    data = _load(ctx, config, proto, module.input_names)
    teacher, teacher_info = _teacher_outputs(ctx, data)
    task = _task(teacher, data, config, warnings)
    before = _evaluate(ctx.input_path, data, teacher, task, ctx.threads)
    device = _device(ctx, warnings)
    history = train(module, data, teacher, task, config, device)
    out = ctx.work_dir / "distilled.onnx"
    onnx_io.save_model(write_back(module.cpu(), proto), out)
    error = _check_written(out, module, data, ctx.threads)
    after = _evaluate(out, data, teacher, task, ctx.threads)
    if after["agreement"] < before["agreement"]:
        warnings.append(
            f"Distillation lowered agreement with the teacher on the held-out split "
            f"({before['agreement']:.4f} -> {after['agreement']:.4f}); try a lower `lr`."
        )
    metrics = {
        **_summary(task, config, data, teacher, teacher_info),
        "before": before,
        "after": after,
        "epochs": history,
        "train_wall_s": round(sum(e["wall_s"] for e in history), 4),
        "device": device,
        "batchnorm": (
            "inference form: running statistics fixed, scale and shift trained"
            if any(n.op_type == "BatchNormalization" for n in proto.graph.node)
            else "none in the graph"
        ),
        "write_back_max_abs_error": error,
    }
    return PassResult(out, "onnx", metrics, warnings)


def _bind(arrays: dict[str, np.ndarray], names: list[str], what: str) -> list[np.ndarray]:
    """Arrays for a model's inputs: by name, else by position."""
    if all(name in arrays for name in names):
        return [arrays[name] for name in names]
    if len(arrays) == len(names):
        return list(arrays.values())
    raise JobFailure(
        "invalid_dataset", f"The dataset's arrays {sorted(arrays)} do not fit {what} {names}."
    )


def _load(ctx: PassContext, config: DistillConfig, proto: Any, names: list[str]) -> Data:
    try:
        raw, labels = ctx.tools.dataset_inputs(config.dataset_id, config.max_samples)
    except (ValueError, KeyError, OSError) as exc:
        raise JobFailure("invalid_dataset", f"Dataset {config.dataset_id}: {exc}") from exc
    counts = {len(a) for a in raw.values()} | ({len(labels)} if labels is not None else set())
    if len(counts) != 1 or counts.pop() < 2:
        raise JobFailure("invalid_dataset", "The dataset needs 2+ samples, as many in every array.")
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.input}
    student = [
        np.ascontiguousarray(a, dtype=helper.tensor_dtype_to_np_dtype(types[n]))
        for a, n in zip(_bind(raw, names, "the model's inputs"), names, strict=True)
    ]
    count = len(student[0])
    order = np.random.default_rng(config.seed).permutation(count)
    held = min(max(1, round(count * config.validation_split)), count - 1)
    return Data(student, raw, labels, np.sort(order[held:]), np.sort(order[:held]))


def _ort_outputs(session: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """A session's outputs over all samples, in chunks of `inference_chunk` samples."""
    inputs = session.get_inputs()
    chunks: list[list[np.ndarray]] = []
    step = inference_chunk(arrays)
    for start in range(0, len(arrays[0]), step):
        feeds = {
            spec.name: np.ascontiguousarray(a[start : start + step]).astype(
                ORT_TYPES.get(spec.type, a.dtype), copy=False
            )
            for spec, a in zip(inputs, arrays, strict=True)
        }
        chunks.append(session.run(None, feeds))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _teacher_outputs(ctx: PassContext, data: Data) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The original model's outputs on every sample, in its own runtime."""
    path, fmt = ctx.original_path, ctx.original_format
    if path is None or fmt is None:
        raise JobFailure("no_teacher", "Distillation needs the original model as the teacher.")
    if fmt == "onnx":
        session = ort_session(path, ctx.threads)
        names = [i.name for i in session.get_inputs()]
        outputs = _ort_outputs(session, _bind(data.raw, names, "the teacher's inputs"))
        return outputs, {"format": fmt, "runtime": "onnxruntime"}
    return _torch_teacher(ctx, path, fmt, data), {"format": fmt, "runtime": "torch"}


def _torch_teacher(ctx: PassContext, path: Path, fmt: str, data: Data) -> list[np.ndarray]:
    module, _program = ctx.tools.load_torch(path, fmt)
    names = [spec["name"] for spec in ctx.inputs] or list(data.raw)
    dtypes = {spec["name"]: spec.get("dtype") for spec in ctx.inputs}
    arrays = [
        a.astype(dtypes[n]) if dtypes.get(n) in ("float32", "int64", "int32", "bool") else a
        for a, n in zip(_bind(data.raw, names, "the teacher's inputs"), names, strict=True)
    ]
    chunks: list[list[np.ndarray]] = []
    with torch.inference_mode():
        step = inference_chunk(arrays)
        for start in range(0, len(arrays[0]), step):
            part = [np.ascontiguousarray(a[start : start + step]) for a in arrays]
            result = module(*[torch.from_numpy(a) for a in part])
            result = result if isinstance(result, list | tuple) else [result]
            chunks.append([r.detach().cpu().numpy() for r in result])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _is_probability(array: np.ndarray) -> bool:
    return bool(array.min(initial=0) >= 0 and np.allclose(array.sum(-1), 1.0, atol=1e-3))


def _task(
    teacher: list[np.ndarray], data: Data, config: DistillConfig, warnings: list[str]
) -> Task:
    kinds = [
        "skip" if not np.issubdtype(t.dtype, np.floating)
        else "kl" if t.ndim == 2 and t.shape[1] >= 2 else "mse"
        for t in teacher
    ]  # fmt: skip
    if all(k == "skip" for k in kinds):
        raise JobFailure("distill_failed", "The teacher has no float output to distil from.")
    probabilities = [k == "kl" and _is_probability(t) for k, t in zip(kinds, teacher, strict=True)]
    primary = kinds.index("kl") if "kl" in kinds else kinds.index("mse")
    labels, alpha = data.labels, config.alpha
    if labels is not None and kinds[primary] != "kl":
        warnings.append(
            "The dataset's labels are not used: the model's output is not a classifier."
        )
        labels = None
    if labels is None:
        if alpha < 1:
            warnings.append(
                "The dataset has no usable labels: alpha forced to 1 (soft targets only)."
            )
        alpha = 1.0
    else:
        labels = _class_labels(labels, teacher[primary].shape[1])
    return Task(kinds, probabilities, primary, alpha, labels)


def _class_labels(labels: np.ndarray, classes: int) -> np.ndarray:
    flat = np.asarray(labels).reshape(len(labels), -1)
    if flat.shape[1] != 1 or not np.all(np.equal(np.mod(flat, 1), 0)):
        raise JobFailure("invalid_dataset", "`labels` must hold one integer class id per sample.")
    ids = flat[:, 0].astype(np.int64)
    if ids.min() < 0 or ids.max() >= classes:
        raise JobFailure(
            "invalid_dataset",
            f"`labels` range {ids.min()}..{ids.max()}, the model has {classes} classes.",
        )
    return ids


def _summary(
    task: Task,
    config: DistillConfig,
    data: Data,
    teacher: list[np.ndarray],
    teacher_info: dict[str, Any],
) -> dict[str, Any]:
    """The run's setup: losses, what agreement means, the teacher, the split."""
    soft = sorted({"kl * T^2" if k == "kl" else "mse" for k in task.kinds if k != "skip"})
    info = dict(teacher_info)
    if task.labels is not None:
        hits = teacher[task.primary][data.val].argmax(-1) == task.labels[data.val]
        info["accuracy"] = round(float(np.mean(hits)), 6)
    return {
        "loss": {
            "soft": soft,
            "hard": "cross_entropy" if task.alpha < 1 else None,
            "alpha": task.alpha,
            "temperature": config.temperature,
            "labels": task.labels is not None,
        },
        "agreement_metric": "top1" if task.kinds[task.primary] == "kl" else "cosine",
        "teacher": info,
        "samples": {"train": int(data.train.size), "validation": int(data.val.size)},
    }


def _device(ctx: PassContext, warnings: list[str]) -> str:
    if ctx.device == "cuda":
        if torch.cuda.is_available():
            return "cuda"
        warnings.append("The job asked for CUDA, which is not available here: trained on CPU.")
    return "cpu"


def _evaluate(
    path: Path, data: Data, teacher: list[np.ndarray], task: Task, threads: int
) -> dict[str, Any]:
    """The ONNX model's held-out agreement with the teacher and accuracy, with onnxruntime."""
    session = ort_session(path, threads)
    outputs = _ort_outputs(session, [a[data.val] for a in data.student])
    shapes = [o.shape[1:] for o in outputs], [t.shape[1:] for t in teacher]
    if shapes[0] != shapes[1]:
        raise JobFailure(
            "distill_failed",
            f"The student's outputs {shapes[0]} do not match the teacher's {shapes[1]}.",
        )
    student = outputs[task.primary]
    result: dict[str, Any] = {
        "agreement": agreement(student, teacher[task.primary][data.val], task)
    }
    if task.labels is not None:
        hits = student.argmax(-1) == task.labels[data.val]
        result["accuracy"] = round(float(np.mean(hits)), 6)
    return result


def _torch_outputs(module: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The module's outputs over all samples, in chunks of `inference_chunk` samples."""
    chunks: list[list[np.ndarray]] = []
    step = inference_chunk(arrays)
    with torch.no_grad():
        for start in range(0, len(arrays[0]), step):
            out = module(*[torch.from_numpy(a[start : start + step]) for a in arrays])
            chunks.append([t.numpy() for t in (out if isinstance(out, tuple) else (out,))])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _check_written(path: Path, module: Any, data: Data, threads: int) -> float:
    """The written file in onnxruntime against the trained module; `distill_failed` past
    `CHECK_TOL`. Returns the max abs error."""
    index = data.val[:CHECK_SAMPLES]
    arrays = [a[index] for a in data.student]
    try:
        got = _ort_outputs(ort_session(path, threads), arrays)
    except Exception as exc:
        raise JobFailure("distill_failed", f"onnxruntime cannot run the result: {exc}") from exc
    expected = _torch_outputs(module.cpu(), arrays)
    error = 0.0
    for e, g in zip(expected, got, strict=True):
        diff = np.abs(e.astype(np.float64) - g)
        error = max(error, float(diff.max(initial=0)))
        if e.shape != g.shape or not np.all(diff <= CHECK_TOL + CHECK_TOL * np.abs(e)):
            raise JobFailure(
                "distill_failed",
                f"The written model differs from the trained one: max abs error {error:.3g}.",
            )
    return error
