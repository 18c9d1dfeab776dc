"""The client's errors: each prints as one line (`modelpress: <error>`, exit 3)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A problem+json answer (RFC 9457: `status`, `code`, `detail`), with its body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('code', '')}: {problem.get('detail', problem)}")
        self.status, self.problem = status, problem

    @property
    def code(self) -> str | None:
        code = self.problem.get("code")
        return str(code) if code is not None else None


class UnsupportedByServer(ApiError):
    """The server has no such route (an older server): e.g. `GET /v1/jobs/{id}/logs`."""

    def __init__(self, what: str) -> None:
        super().__init__(404, {"code": "not_supported", "detail": f"this server has no {what}"})

    def __str__(self) -> str:
        return str(self.problem["detail"])
