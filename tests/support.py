"""Assertions shared by the tests (importable: pytest puts tests/ on the path).

Imports no model library at import time (the API tests use it): numpy, onnx and onnxruntime are
imported inside the helpers that need them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

# For tests whose subject is the ML path (export, quantization, measurement through the worker),
# not the database: one backend, the embedded default. The database's own behaviour (leases,
# faults, two workers, Redis) is tested on SQLite and Postgres alike; running these heavy jobs
# twice only doubled CI's time.
ML_PATH_ONE_BACKEND = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem+json with this status and machine code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert (body["status"], body["code"]) == (status, code)
    assert body["type"].endswith(code)
    return dict(body)


def fixture_feeds(name: str) -> dict[str, Any]:
    """Seeded inputs for the conftest networks (`mlp`, `transformer`, `cnn`)."""
    import numpy as np

    rng = np.random.default_rng(7)
    if name == "mlp":
        return {"input": rng.standard_normal((64, 32), dtype=np.float32)}
    if name == "transformer":
        return {"input_ids": rng.integers(0, 1000, (16, 24), dtype=np.int64)}
    return {"x": rng.standard_normal((8, 3, 16, 16), dtype=np.float32)}


def first_output(path: Any, feeds: dict[str, Any]) -> Any:
    """An ONNX model's first output on `feeds`, run by onnxruntime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


# ---------------------------------------------------------------- measured on model files
#
# What a pass did, measured on the files themselves (never on the pass's own metrics), so that a
# pass that returns its input unchanged fails them: tests/worker/passes/test_noop_guard.py runs
# each `assert_*` below against such a no-op and expects its AssertionError.


def sha256_of(path: Any) -> str:
    """The file's sha256, hex."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def op_histogram(path: Any) -> Counter[str]:
    """How many nodes of each op type the ONNX graph has."""
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def float_weights(path: Any) -> dict[str, Any]:
    """The float initializers of more than one element, by name."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    return {k: v for k, v in arrays.items() if v.dtype.kind == "f" and v.size > 1 and np.ndim(v)}


def parameter_count(path: Any) -> int:
    """Elements of the float initializers: what pruning removes."""
    return sum(int(v.size) for v in float_weights(path).values())


def weight_shapes(path: Any) -> list[tuple[int, ...]]:
    """The shapes of the Conv/Gemm/MatMul weight initializers, in graph order."""
    import onnx

    model = onnx.load(str(path))
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return [
        dims[node.input[1]]
        for node in model.graph.node
        if node.op_type in ("Conv", "Gemm", "MatMul") and node.input[1] in dims
    ]


def weight_sparsity(path: Any) -> float:
    """The fraction of exact zeros over the float initializers of rank 2 or more."""
    weights = [v for v in float_weights(path).values() if v.ndim >= 2]
    return sum(int((v == 0).sum()) for v in weights) / sum(int(v.size) for v in weights)


def predictions(path: Any, inputs: Any) -> Any:
    """The first output of an ONNX model whose first input is fed `inputs`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def accuracy(path: Any, inputs: Any, labels: Any) -> float:
    """Top-1 accuracy of a classifier on labelled inputs."""
    import numpy as np

    return float(np.mean(predictions(path, inputs).argmax(-1) == labels))


def agreement(path: Any, teacher: Any, inputs: Any) -> float:
    """How often a classifier's top-1 class is the teacher's."""
    import numpy as np

    ours, theirs = predictions(path, inputs).argmax(-1), predictions(teacher, inputs).argmax(-1)
    return float(np.mean(ours == theirs))


def teacher_gap(path: Any, teacher: Any, inputs: Any, temperature: float = 4.0) -> float:
    """How far a student's first output is from the teacher's: the mean KL(teacher || student)
    of the softened class distributions for 2-D logits (the distill objective), else the MSE."""
    import numpy as np

    student = predictions(path, inputs).astype(np.float64)
    target = predictions(teacher, inputs).astype(np.float64)
    if student.ndim != 2:
        return float(np.mean((student - target) ** 2))

    def log_softmax(logits: Any) -> Any:
        scaled = logits / temperature
        scaled = scaled - scaled.max(-1, keepdims=True)
        return scaled - np.log(np.exp(scaled).sum(-1, keepdims=True))

    ours, theirs = log_softmax(student), log_softmax(target)
    return float(np.mean((np.exp(theirs) * (theirs - ours)).sum(-1)))


def assert_artifact_differs(upload: Any, artifact: Any) -> None:
    """The job's artifact is not the uploaded file byte for byte."""
    assert sha256_of(artifact) != sha256_of(upload), "artifact is the upload, byte for byte"


def assert_fewer_parameters(source: Any, output: Any, at_most: float = 1.0) -> None:
    """The output has fewer parameters than `at_most` times the source's."""
    before, after = parameter_count(source), parameter_count(output)
    assert after < at_most * before, f"parameters not removed: {before} -> {after}"


def assert_pruned_to(source: Any, output: Any, shapes: dict[int, tuple[int, ...]]) -> None:
    """The weights at these positions (of `weight_shapes`) have these shapes in the output, other
    shapes in the source, and the output has fewer parameters."""
    before, after = weight_shapes(source), weight_shapes(output)
    assert all(before[i] != shape for i, shape in shapes.items()), (before, shapes)
    got = {i: after[i] for i in shapes}
    assert got == shapes, f"units not removed: weights {got}, expected {shapes}"
    assert_fewer_parameters(source, output)


def assert_weights_changed(source: Any, output: Any) -> None:
    """Every float weight of rank 2 or more (same names, shapes and dtypes) has new values."""
    import numpy as np

    before, after = float_weights(source), float_weights(output)
    assert before.keys() == after.keys()
    same = [k for k, v in before.items() if v.ndim >= 2 and np.array_equal(v, after[k])]
    assert not same, f"weights unchanged by training: {same}"


def assert_accuracy_gain(
    student: Any, output: Any, inputs: Any, labels: Any, margin: float
) -> None:
    """The output's accuracy is above the student's by more than `margin`."""
    before, after = accuracy(student, inputs, labels), accuracy(output, inputs, labels)
    assert after > before + margin, f"accuracy did not rise by {margin}: {before} -> {after}"


def assert_agreement_gain(
    student: Any, output: Any, teacher: Any, inputs: Any, margin: float
) -> None:
    """The output agrees with the teacher more often than the student does, by over `margin`."""
    before, after = agreement(student, teacher, inputs), agreement(output, teacher, inputs)
    assert after > before + margin, f"agreement did not rise by {margin}: {before} -> {after}"


def assert_closer_to_teacher(
    student: Any, output: Any, teacher: Any, inputs: Any, by: float = 0.1
) -> None:
    """The output's `teacher_gap` is below the student's by more than the fraction `by`."""
    before, after = teacher_gap(student, teacher, inputs), teacher_gap(output, teacher, inputs)
    assert after < (1 - by) * before, f"not closer to the teacher: gap {before} -> {after}"


def assert_graph_optimized(upload: Any, artifact: Any) -> None:
    """The artifact's graph has fewer nodes than the upload's."""
    before, after = op_histogram(upload), op_histogram(artifact)
    assert sum(after.values()) < sum(before.values()), f"graph not optimized: {before} -> {after}"


def assert_fp16_weights(upload: Any, artifact: Any) -> None:
    """The artifact holds float16 weights where the upload has none, and is under 70% its size."""
    import numpy as np

    def halves(path: Any) -> int:
        return sum(v.dtype == np.float16 for v in float_weights(path).values())

    size = Path(artifact).stat().st_size / Path(upload).stat().st_size
    assert (halves(upload), halves(artifact) > 0) == (0, True), "no float16 weights"
    assert size < 0.7, f"not converted to fp16: size ratio {size:.2f}"


def assert_sparser(upload: Any, artifact: Any, at_least: float) -> None:
    """The artifact's weights have more than a fraction `at_least` more exact zeros than the
    upload's."""
    before, after = weight_sparsity(upload), weight_sparsity(artifact)
    assert after > before + at_least, f"weights not sparsified: {before:.3f} -> {after:.3f}"


def assert_quantized(upload: Any, artifact: Any) -> None:
    """The artifact quantizes (QuantizeLinear, int8/uint8 initializers) where the upload did not."""
    import onnx

    def int8_initializers(path: Any) -> int:
        kinds = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
        return sum(t.data_type in kinds for t in onnx.load(str(path)).graph.initializer)

    counts = [(op_histogram(p)["QuantizeLinear"], int8_initializers(p)) for p in (upload, artifact)]
    assert counts[0] == (0, 0), f"the upload is quantized already: {counts[0]}"
    assert min(counts[1]) > 0, f"not quantized: (QuantizeLinear, int8 initializers) {counts[1]}"


def assert_torchscript_archive(upload: Any, artifact: Any) -> None:
    """The artifact is a TorchScript archive (a zip with code/ and data.pkl), not the upload."""
    import zipfile

    assert_artifact_differs(upload, artifact)
    assert zipfile.is_zipfile(artifact), "artifact is not a TorchScript archive (not a zip)"
    names = zipfile.ZipFile(artifact).namelist()
    assert any("/code/" in n for n in names) and any(n.endswith("/data.pkl") for n in names), names


# MODELPRESS_CPU_FLAGS is not a setting of the service under test but the CPU kind the whole run
# simulates (`MODELPRESS_CPU_FLAGS=avx2,fma make test` runs every int8 path as on an AVX2 CPU).
CPU_FLAGS_ENV = "MODELPRESS_CPU_FLAGS"


def is_service_setting(key: str) -> bool:
    """A `MODELPRESS_*` variable a test must clear so that its own settings apply."""
    return key.startswith("MODELPRESS_") and key != CPU_FLAGS_ENV


def report_document(
    job_id: str, met: bool | None = None, optimized_size: int = 100
) -> dict[str, Any]:
    """The smallest report of the documented shape (schema_version "1"): the original and the
    result measured alike but for the result's size, and the verdict `met`."""
    measurement = {
        "format": "onnx",
        "runtime": "onnxruntime",
        "size_bytes": 100,
        "compressed_size_bytes": 90,
        "parameters": 10,
        "nonzero_parameters": 10,
        "sparsity": 0.0,
        "load_ms": 1.0,
        "load_rss_bytes": 0,
        "latency_ms": {"1": {"p50": 0.5, "iterations": 5}},
        "throughput": {"1": 2000.0},
        "memory": {"peak_rss_bytes": None, "how": "not measured"},
    }
    output = {
        "max_abs_error": 0.0,
        "mean_abs_error": 0.0,
        "cosine_min": 1.0,
        "cosine_mean": 1.0,
        "top1_agreement": 1.0,
        "nan_or_inf": False,
        "shape_match": True,
    }
    return {
        "schema_version": "1",
        "job_id": job_id,
        "model": {"id": "m", "name": "mlp.onnx", "format": "onnx", "sha256": "0" * 64},
        "baseline": measurement,
        "optimized": {**measurement, "size_bytes": optimized_size},
        "comparison": {"size_ratio": optimized_size / 100, "speedup": {"1": 1.0}},
        "fidelity": {"inputs": "synthesized", "samples": 4, "outputs": {"output": output}},
        "steps": [],
        "environment": {
            "device": "cpu",
            "execution_provider": ["CPUExecutionProvider"],
            "cpu_model": None,
            "cpu_flags": [],
            "cores": 2,
            "threads": 1,
            "memory_bytes": None,
            "python": "3.11",
            "platform": "linux",
            "libraries": {},
        },
        "benchmark": {
            "batch_sizes": [1],
            "iterations": 5,
            "warmup": 1,
            "threads": 1,
            "interleaved": True,
            "inputs": [],
        },
        "verdict": {"met": met, "reasons": ["too slow"] if met is False else [], "notes": []},
    }
