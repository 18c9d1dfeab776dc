"""The domain's errors; each becomes one RFC 9457 problem (see app/http/problems.py)."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://modelpress.dev/problems/"


class AppError(Exception):
    """An expected failure with an HTTP status, a stable machine code and a title."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem+json body of this error."""
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(AppError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Missing or invalid API key"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class Gone(AppError):
    """An object that retention removed (MODELPRESS_RETENTION_DAYS): it existed, and is gone."""

    status, code, title = 410, "expired", "Expired"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class QuotaExceeded(AppError):
    """The tenant's storage quota (MODELPRESS_TENANT_STORAGE_BYTES); RELIABILITY.md UP-09."""

    status, code, title = 403, "quota_exceeded", "Storage quota exceeded"


class TooManyRequests(AppError):
    """A rate or concurrency limit; the answer carries `Retry-After` (seconds)."""

    status, code, title = 429, "too_many_requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code, retry_after=retry_after)
        self.retry_after = retry_after


class UnsupportedModelFormat(AppError):
    status, code, title = 415, "unsupported_model_format", "Unsupported model format"


class Unprocessable(AppError):
    status, code, title = 422, "unprocessable", "Unprocessable input"


class UnsafePickle(Unprocessable):
    code, title = "unsafe_pickle", "Pickled Python objects are refused"


class SpecInvalid(Unprocessable):
    code, title = "spec_invalid", "Invalid job spec"


class InvalidDataset(Unprocessable):
    code, title = "invalid_dataset", "Invalid dataset"


class ArtifactCorrupt(AppError):
    """Stored bytes that no longer match their hash: never served (see app/blobs/service.py)."""

    status, code, title = 500, "artifact_corrupt", "Stored bytes failed their integrity check"


class InsufficientStorage(AppError):
    status, code, title = 507, "insufficient_storage", "Insufficient storage"


class ServiceUnavailable(AppError):
    status, code, title = 503, "unavailable", "Service unavailable"


class StorageUnavailable(ServiceUnavailable):
    """The object store did not answer (or answered a server error), after the client's own
    retries: a pipeline should retry later, nothing was lost."""

    status, code, title = 503, "storage_unavailable", "Object storage unavailable"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class JobFailure(Exception):
    """A job's failure as stored on the job (a problem with a code), raised in the worker."""

    def __init__(self, code: str, detail: str, title: str = "Job failed") -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.title = title

    def to_problem(self) -> dict[str, Any]:
        """The job's `error` field."""
        return {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": 422,
            "detail": self.detail,
            "code": self.code,
        }
