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
