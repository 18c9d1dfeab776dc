"""What crosses the sandbox boundary: the request the supervisor writes and the result the child
writes back, both as JSON files in the job's scratch directory.

The result comes from a process that ran an uploaded model, so the supervisor treats it as
untrusted input: it is size-bounded and validated, and a result that does not fit is no result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
RESULT_MAX_BYTES = 4 * 1024 * 1024  # a report-sized verdict and artifact list; more is hostile
# The zygote's handshake (worker/sandbox/zygote.py and template.py): its socket's fd and its
# parent's pid in its environment, one JSON message per datagram.
ZYGOTE_FD_ENV, ZYGOTE_PARENT_ENV = "MODELPRESS_ZYGOTE_FD", "MODELPRESS_ZYGOTE_PARENT"
ZYGOTE_MESSAGE_BYTES = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelFile(_Strict):
    """The model the child works on: a path inside its scratch and what the API knows of it."""

    path: str
    format: str
    input_shapes: Any = None
    inputs: list[dict[str, Any]] = Field(default_factory=list)
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    public: dict[str, Any] = Field(default_factory=dict, description="As shown in the report.")


class SandboxRequest(_Strict):
    """One inspection or one job run, as the supervisor hands it to a fresh child."""

    kind: Literal["inspect", "run"]
    model: ModelFile
    threads: int = Field(1, ge=1)
    job_id: str | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    spec: dict[str, Any] | None = None
    datasets: dict[str, str] = Field(default_factory=dict, description="id -> scratch path.")
    datasets_sha256: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Seconds the supervisor spent before the child: queue wait, staging.",
    )
    sent_at: float | None = Field(
        None, description="Epoch seconds when the supervisor started the child."
    )


class ArtifactFile(_Strict):
    """A file the child left under `out/` for the supervisor to hash and publish."""

    name: str = Field(max_length=255)
    kind: str = Field(max_length=32)
    media_type: str = Field("application/octet-stream", max_length=255)


class SandboxError(_Strict):
    code: str = Field(max_length=64)
    detail: str = Field(max_length=4000)


class SandboxResult(_Strict):
    """The child's answer: `ok` with the inspection or the artifacts, or an error."""

    ok: bool
    error: SandboxError | None = None
    model: dict[str, Any] | None = None  # inspection: signature, parameter count, opset
    artifacts: list[ArtifactFile] = Field(default_factory=list, max_length=1000)
    verdict: dict[str, Any] | None = None


def failure(code: str, detail: str) -> SandboxResult:
    """A failed result (detail cut to what a problem's `detail` holds)."""
    return SandboxResult(ok=False, error=SandboxError(code=code, detail=detail[:2000]))


def read_result(scratch: Path) -> SandboxResult | None:
    """The child's result, or None when there is none, it is too large or it does not fit."""
    path = scratch / RESULT_FILE
    try:
        if path.is_symlink() or path.stat().st_size > RESULT_MAX_BYTES:
            return None
        return SandboxResult.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        return None
