"""RFC 9457 problem+json for every error: domain errors, validation errors, the unexpected."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import PROBLEM_BASE, AppError

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


def _validation_problem(exc: RequestValidationError) -> dict[str, Any]:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        errors.append({"pointer": "/" + "/".join(loc), "message": err.get("msg", "")})
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
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return Problem(exc.to_problem(str(request.url.path)), exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Problem:
        return Problem(_validation_problem(exc), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Problem:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
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
