"""The sandbox's request and result files: typed both ways, the child's answer untrusted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.sandbox.protocol import (
    RESULT_FILE,
    RESULT_MAX_BYTES,
    ModelFile,
    SandboxRequest,
    SandboxResult,
    failure,
    read_result,
)


def test_request_round_trips_through_json() -> None:
    request = SandboxRequest(
        kind="run",
        job_id="j",
        spec={"model_id": "m"},
        model=ModelFile(path="m.onnx", format="onnx"),
    )

    again = SandboxRequest.model_validate_json(request.model_dump_json())

    assert again == request


def test_request_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        SandboxRequest.model_validate(
            {"kind": "run", "model": {"path": "m", "format": "onnx"}, "secret": "x"}
        )


def test_result_written_by_a_child_is_read_back(tmp_path: Path) -> None:
    (tmp_path / RESULT_FILE).write_text(failure("model_rejected", "bad").model_dump_json())

    result = read_result(tmp_path)

    assert result is not None and result.error is not None
    assert (result.ok, result.error.code, result.error.detail) == (False, "model_rejected", "bad")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"ok": true, "artifacts": [{"name": "m", "kind": "model", "extra": 1}]}',
        b'{"ok": "maybe"}',
        b'{"ok": false, "error": {"code": "' + b"x" * 100 + b'", "detail": ""}}',
    ],
    ids=["garbage", "unknown-field", "wrong-type", "oversized-code"],
)
def test_result_that_does_not_fit_is_no_result(tmp_path: Path, body: bytes) -> None:
    (tmp_path / RESULT_FILE).write_bytes(body)

    assert read_result(tmp_path) is None


def test_oversized_result_is_not_read(tmp_path: Path) -> None:
    padding = " " * (RESULT_MAX_BYTES + 1)
    (tmp_path / RESULT_FILE).write_text('{"ok": true}' + padding)

    assert read_result(tmp_path) is None


def test_result_behind_a_symlink_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(SandboxResult(ok=True).model_dump_json())
    os.symlink(elsewhere, tmp_path / RESULT_FILE)

    assert read_result(tmp_path) is None


def test_missing_result_is_none(tmp_path: Path) -> None:
    assert read_result(tmp_path) is None
