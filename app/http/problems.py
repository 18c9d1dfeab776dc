"""RFC 9457 problem+json for every error: domain errors, validation errors, the unexpected."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import PROBLEM_BASE, AppError, TooManyRequests
from app.core.uploads import insufficient_storage, is_disk_full

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class Problem(JSONResponse):
    media_type = PROBLEM_JSON


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problems a route can answer."""
    schema = {"$ref": "#/components/schemas/ProblemDetail"}
    return {
        s: {"description": "Problem", "content": {PROBLEM_JSON: {"schema": schema}}}
        for s in statuses
    }


def document_validation_problems(schema: dict[str, Any]) -> None:
    """Point FastAPI's generated 422 answers at the problem+json they really are (in place)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {}) if isinstance(operation, dict) else {}
            if "422" in responses:
                responses["422"] = problem_responses(422)[422]


def document_rate_limit(schema: dict[str, Any]) -> None:
    """Every `/v1` operation may answer 429 (MODELPRESS_RATE_LIMIT_PER_MINUTE): say so."""
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/v1/"):
            continue
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.setdefault("responses", {}).setdefault("429", problem_responses(429)[429])


def _pointer(loc: Sequence[Any], body: Any) -> str:
    """The JSON pointer of an error into the document sent: pydantic's `loc` of a body error
    also names the union member it tried (`steps/0/quantize/...`), which is no key of it."""
    if not loc or loc[0] != "body":
        return "/" + "/".join(str(p) for p in loc)
    parts, node = [], body
    for index, part in enumerate(loc[1:], start=2):
        sent = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if not sent and isinstance(node, dict) and index < len(loc):
            continue  # a union tag: the next part is a key of this same object
        node = node[part] if sent else None  # None: a missing field, or past what was sent
        parts.append(str(part))
    return "/" + "/".join(parts)


def _validation_problem(exc: RequestValidationError) -> dict[str, Any]:
    errors = []
    for err in exc.errors():
        pointer = _pointer(err.get("loc", ()), exc.body)
        errors.append({"pointer": pointer, "message": err.get("msg", "")})
    detail = "; ".join(f"{e['pointer']}: {e['message']}" for e in errors[:5])
    return {
        "type": PROBLEM_BASE + "validation_error",
        "title": "Invalid request",
        "status": 422,
        "detail": detail,
        "code": "validation_error",
        "errors": errors,
    }


def install_problem_handlers(app: FastAPI) -> None:
    """Every error becomes problem+json; a 500 shows only a request id."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Problem:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        return Problem(exc.to_problem(str(request.url.path)), exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Problem:
        return Problem(_validation_problem(exc), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Problem:
        # 400 is FastAPI's own "There was an error parsing the body" (e.g. bytes that are not
        # UTF-8 where JSON is expected).
        codes = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        body = {
            "type": PROBLEM_BASE + code,
            "title": str(exc.detail),
            "status": exc.status_code,
            "detail": str(exc.detail),
            "code": code,
        }
        return Problem(body, exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Problem:
        request_id = uuid.uuid4().hex
        log.exception("unhandled error", extra={"request_id": request_id})
        body = {
            "type": PROBLEM_BASE + "internal_error",
            "title": "Internal error",
            "status": 500,
            "detail": f"An internal error occurred; request id {request_id}.",
            "code": "internal_error",
            "instance": request_id,
        }
        return Problem(body, 500)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> Problem:
        if is_disk_full(exc):  # a full disk anywhere a request writes: 507, not 500
            return Problem(insufficient_storage().to_problem(str(request.url.path)), 507)
        return await _unexpected(request, exc)
