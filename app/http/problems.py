"""RFC 9457 problem+json for every error: domain errors, validation errors, the unexpected."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import (
    PROBLEM_BASE,
    AppError,
    ArtifactCorrupt,
    BadRequest,
    Conflict,
    Gone,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    ServiceUnavailable,
    SpecInvalid,
    StorageUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedModelFormat,
)
from app.core.uploads import insufficient_storage, is_disk_full

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class Problem(JSONResponse):
    media_type = PROBLEM_JSON


# The RFC 9457 shape every error has; a route's problem answers all point at it.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ProblemDetail",
    "description": "An RFC 9457 problem: every error of this API (and a failed job's `error`).",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {
            "type": "string",
            "description": "A URI naming the kind of problem: the base URL plus `code`.",
        },
        "title": {"type": "string", "description": "Short, human summary of the kind."},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong this time, for a human."},
        "code": {"type": "string", "description": "Stable machine code, e.g. `unsafe_pickle`."},
        "instance": {
            "type": "string",
            "description": "The request path, or the request id of an internal error (500).",
        },
        "pointer": {"type": "string", "description": "JSON pointer to the refused spec field."},
        "errors": {
            "type": "array",
            "description": "Validation errors (`validation_error`), each with its JSON pointer.",
            "items": {
                "type": "object",
                "properties": {
                    "pointer": {
                        "type": "string",
                        "description": "JSON pointer into the request (`/steps/0/sparsity`), "
                        "or `/query/limit`, `/header/...` for parameters.",
                    },
                    "message": {"type": "string", "description": "Why it was refused."},
                },
            },
        },
    },
}

# What each status means on this API (the `description` of a documented problem answer; a route
# passes `notes` to say what it means there) and an example body, made by the error that answers it.
_JOB = "0b6f2c1e-5d7a-4c3e-9a51-2f4b8d9e7c10"
PROBLEMS: dict[int, tuple[str, AppError]] = {
    400: (
        "Malformed request: not the body this route reads, an invalid cursor or "
        "Content-Length (`malformed_body`, `malformed_multipart`, `invalid_cursor`, ...).",
        BadRequest("Invalid cursor.", code="invalid_cursor"),
    ),
    401: (
        "Missing, invalid or revoked API key (`unauthorized`), when "
        "MODELPRESS_AUTH_REQUIRED is on; sent with `WWW-Authenticate: Bearer`.",
        Unauthorized("Send `Authorization: Bearer <api key>`."),
    ),
    403: (
        "The tenant's storage quota has no room (`quota_exceeded`, "
        "MODELPRESS_TENANT_STORAGE_BYTES); the body carries `used_bytes` and `quota_bytes`.",
        QuotaExceeded(
            "The tenant stores 1048576 of its 1048576 bytes; delete models, datasets or jobs "
            "to make room (MODELPRESS_TENANT_STORAGE_BYTES).",
            used_bytes=1048576,
            quota_bytes=1048576,
        ),
    ),
    404: (
        "No such object for this API key's tenant (`not_found`); another tenant's objects "
        "look missing too.",
        NotFound(f"No job {_JOB}."),
    ),
    409: (
        "The object's state forbids it (see `code`).",
        Conflict("Jobs refer to this model.", code="model_in_use"),
    ),
    410: (
        "Removed by retention (`expired`, MODELPRESS_RETENTION_DAYS): it existed, and is gone.",
        Gone(f"Job {_JOB} expired on 2026-11-01 (retention)."),
    ),
    413: (
        "The body is over its limit (`payload_too_large`): MODELPRESS_MAX_BODY_BYTES for "
        "JSON, MODELPRESS_MAX_UPLOAD_BYTES for uploads.",
        PayloadTooLarge(
            "The request body exceeds the limit of 1048576 bytes (MODELPRESS_MAX_BODY_BYTES).",
            limit=1048576,
        ),
    ),
    415: (
        "The bytes are no model format ModelPress reads (`unsupported_model_format`).",
        UnsupportedModelFormat("Not an ONNX, TorchScript or .pt2 file."),
    ),
    422: (
        "Invalid input: `validation_error` (with `errors`, each with a JSON pointer) or a "
        "domain code such as `spec_invalid` (with `pointer`).",
        SpecInvalid("No model 3f0c8a52-6d1e-4b7a-9c2f-5e8d1a7b4c60.", pointer="/model_id"),
    ),
    429: (
        "Too many requests for this API key (`rate_limited`, "
        "MODELPRESS_RATE_LIMIT_PER_MINUTE) or too many active jobs (`too_many_active_jobs`); "
        "`Retry-After` says in how many seconds to retry.",
        TooManyRequests(
            "Too many requests for this API key (MODELPRESS_RATE_LIMIT_PER_MINUTE); retry in 12 s.",
            retry_after=12,
            code="rate_limited",
        ),
    ),
    500: (
        "Stored bytes failed their sha256 check (`artifact_corrupt`; never served), or an "
        "unexpected error (`internal_error`, only a request id in `instance`).",
        ArtifactCorrupt("The stored bytes of report.json no longer match their sha256."),
    ),
    503: (
        "A dependency is down or not ready (`not_ready`, `unavailable`).",
        ServiceUnavailable("A dependency is down: broker", code="not_ready"),
    ),
    507: (
        "The server's disk is full (`insufficient_storage`); retry later.",
        insufficient_storage(),
    ),
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}


def problem_response(status: int, note: str | None = None) -> dict[str, Any]:
    """The OpenAPI response object of one problem answer (`note`: what it means there)."""
    if status in PROBLEMS:
        description, example = PROBLEMS[status][0], PROBLEMS[status][1].to_problem()
    else:  # a status this table does not know yet: still a problem, said plainly
        phrase = HTTPStatus(status).phrase
        description = phrase
        example = {"type": PROBLEM_BASE + "error", "title": phrase, "status": status,
                   "detail": HTTPStatus(status).description, "code": "error"}  # fmt: skip
    media = {"schema": {"$ref": "#/components/schemas/ProblemDetail"}, "example": example}
    response: dict[str, Any] = {
        "description": note or description,
        "content": {PROBLEM_JSON: media},
    }
    if status == 429:
        response["headers"] = RETRY_AFTER
    return response


def problem_responses(
    *statuses: int, notes: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problems a route can answer.

    Args:
        statuses: The HTTP statuses of its problems (401 and 429 of `/v1` routes are added to
            every one by `document_problems`).
        notes: What a status means on this route, instead of the general text.
    """
    notes = notes or {}
    return {s: problem_response(s, notes.get(s)) for s in statuses}


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
        if isinstance(exc, TooManyRequests | StorageUnavailable):
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
