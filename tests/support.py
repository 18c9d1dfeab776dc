"""Assertions shared by the API tests (importable: pytest puts tests/ on the path)."""

from __future__ import annotations

from typing import Any

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
