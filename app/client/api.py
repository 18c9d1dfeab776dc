"""The ModelPress `/v1` API client (httpx + pydantic: `pip install modelpress` is enough).

Every resource method returns a typed result (app/client/models.py). `get`, `delete` and
`upload` stay as the raw layer (a path in, JSON out) for what has no method yet. Retries:
app/client/retry.py; streamed bodies and progress callbacks: app/client/streams.py; following
a job: app/client/events.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from app.client.errors import ApiError, UnsupportedByServer
from app.client.events import Follower
from app.client.models import (
    TERMINAL,
    Artifact,
    Dataset,
    Job,
    JobEvent,
    Model,
    OptimizeResult,
    Page,
    Report,
)
from app.client.retry import RetryPolicy, send
from app.client.streams import MultipartUpload, ProgressCallback, save_stream

M = TypeVar("M", bound=BaseModel)
IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
__all__ = ["TERMINAL", "ApiError", "Client", "load_json_arg"]


class Client:
    """The `/v1` API over one httpx connection pool; every error answer raises `ApiError`."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        poll_interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.retry, self.poll_interval, self.sleep = retry or RetryPolicy(), poll_interval, sleep

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the raw layer

    def send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        stream: bool = False,
        body: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request with retries (`idempotent` defaults by method); `body()` makes a fresh
        streamed body per try. The answer is returned unchecked (see `check`)."""
        safe = method in IDEMPOTENT if idempotent is None else idempotent
        content = kwargs.pop("content", None)

        def build() -> httpx.Request:
            fresh = body() if body is not None else content
            return self.http.build_request(method, path, content=fresh, **kwargs)

        return send(
            self.http, build, policy=self.retry, idempotent=safe, stream=stream, sleep=self.sleep
        )

    def check(self, response: httpx.Response) -> httpx.Response:
        """The response itself, or `ApiError` with its problem body for a 4xx/5xx."""
        if response.status_code >= 400:
            response.read()  # a streamed body must be read before it is parsed
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:500]}
            if not isinstance(problem, dict):
                problem = {"detail": str(problem)[:500]}
            response.close()
            raise ApiError(response.status_code, problem)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.check(self.send(method, path, **kwargs)).json()

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON resource (raw)."""
        return self._json("GET", path, params=params or None)

    def delete(self, path: str) -> None:
        """DELETE a resource."""
        self.check(self.send("DELETE", path))

    def upload(
        self,
        path: str,
        file: Path,
        on_progress: ProgressCallback | None = None,
        **fields: str | None,
    ) -> Any:
        """POST a file as a streamed multipart `file` with the form fields that are not None
        (raw JSON). Retried only when nothing reached the server (app/client/retry.py)."""
        form = MultipartUpload(
            Path(file), {k: v for k, v in fields.items() if v is not None}, on_progress
        )
        return self._json("POST", path, body=form.body, headers=form.headers, idempotent=False)

    def _typed(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self._json(method, path, **kwargs))

    # ------------------------------------------------------------------ models and datasets

    def list_models(self, limit: int = 50, cursor: str | None = None) -> Page[Model]:
        return self._typed(Page[Model], "GET", "/v1/models", params=_page(limit, cursor))

    def get_model(self, model_id: str) -> Model:
        return self._typed(Model, "GET", f"/v1/models/{model_id}")

    def upload_model(
        self,
        file: Path,
        name: str | None = None,
        input_shapes: Any = None,
        on_progress: ProgressCallback | None = None,
    ) -> Model:
        """Upload a model (`input_shapes`: JSON text or a list/dict, needed for TorchScript)."""
        shapes = input_shapes
        if shapes is not None and not isinstance(shapes, str):
            shapes = json.dumps(shapes)
        raw = self.upload("/v1/models", file, on_progress, name=name, input_shapes=shapes)
        return Model.model_validate(raw)

    def wait_model(self, model_id: str, timeout: float = 600) -> Model:
        """Poll a model until its inspection is over (`ready` or `rejected`)."""
        deadline = time.monotonic() + timeout
        while (model := self.get_model(model_id)).status == "validating":
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {model_id} still validating")
            self.sleep(min(0.5, self.poll_interval))
        return model

    def delete_model(self, model_id: str) -> None:
        self.delete(f"/v1/models/{model_id}")

    def list_datasets(self, limit: int = 50, cursor: str | None = None) -> Page[Dataset]:
        return self._typed(Page[Dataset], "GET", "/v1/datasets", params=_page(limit, cursor))

    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._typed(Dataset, "GET", f"/v1/datasets/{dataset_id}")

    def upload_dataset(
        self, file: Path, name: str | None = None, on_progress: ProgressCallback | None = None
    ) -> Dataset:
        return Dataset.model_validate(self.upload("/v1/datasets", file, on_progress, name=name))

    def delete_dataset(self, dataset_id: str) -> None:
        self.delete(f"/v1/datasets/{dataset_id}")

    # ------------------------------------------------------------------ jobs

    def submit(
        self, spec: dict[str, Any], idempotency_key: str | None = None, *, idempotent: bool = True
    ) -> Job:
        """POST a job spec with an `Idempotency-Key` (a fresh one unless given; none with
        `idempotent=False`): a retried submit then returns the first job, never a second."""
        key = idempotency_key or (str(uuid.uuid4()) if idempotent else None)
        headers = {"Idempotency-Key": key} if key else {}
        return self._typed(
            Job, "POST", "/v1/jobs", json=spec, headers=headers, idempotent=key is not None
        )

    def list_jobs(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[Job]:
        params = {**_page(limit, cursor), **({"status": status} if status else {})}
        return self._typed(Page[Job], "GET", "/v1/jobs", params=params)

    def get_job(self, job_id: str) -> Job:
        return self._typed(Job, "GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (a flag: asking twice is the same, so it is retried)."""
        return self._typed(Job, "POST", f"/v1/jobs/{job_id}/cancel", idempotent=True)

    def events(
        self, job_id: str, last_event_id: str | None = None, timeout: float | None = None
    ) -> Follower:
        """The job's events until its terminal `status` (SSE, or polling where unsupported)."""
        return Follower(
            self,
            job_id,
            poll_interval=self.poll_interval,
            last_event_id=last_event_id,
            sleep=self.sleep,
            timeout=timeout,
        )

    def wait_job(
        self,
        job_id: str,
        on_event: Callable[[JobEvent], None] | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Follow a job to its end (calling `on_event` with each event) and return it; a
        `timeout` (seconds) raises `TimeoutError`, checked at each event and each poll."""
        for event in self.events(job_id, timeout=timeout):
            if on_event:
                on_event(event)
        return self.get_job(job_id)

    def logs(self, job_id: str) -> str:
        """The job's log text (at most its last 1 MB); `UnsupportedByServer` where the server
        has no logs route (the job itself exists)."""
        response = self.send("GET", f"/v1/jobs/{job_id}/logs")
        if response.status_code == 404:
            self.get_job(job_id)  # raises the job's own 404 when it is the job that is missing
            raise UnsupportedByServer("job logs route (GET /v1/jobs/{id}/logs answered 404)")
        return self.check(response).text

    # ------------------------------------------------------------------ artifacts and reports

    def list_artifacts(self, job_id: str) -> list[Artifact]:
        return self.get_job(job_id).artifacts

    def download(self, path: str, dest: Path, on_progress: ProgressCallback | None = None) -> Path:
        """Stream a file to `dest` (its folders are created; nothing is left there on error)."""
        response = self.check(self.send("GET", path, stream=True))
        try:
            return save_stream(response, Path(dest), on_progress)
        finally:
            response.close()

    def download_artifact(
        self, job_id: str, name: str, dest: Path, on_progress: ProgressCallback | None = None
    ) -> Path:
        return self.download(f"/v1/jobs/{job_id}/artifacts/{name}", dest, on_progress)

    def get_report(self, job_id: str) -> Report:
        return self._typed(Report, "GET", f"/v1/jobs/{job_id}/report")

    def optimize(self, model_path: Path | str, **options: Any) -> OptimizeResult:
        """Upload, submit, (with `wait=True`) follow, download the model and reports into
        `out`: see `app.client.optimize.optimize` for the options."""
        from app.client.optimize import optimize

        return optimize(self, Path(model_path), **options)


def _page(limit: int, cursor: str | None) -> dict[str, Any]:
    return {"limit": limit, **({"cursor": cursor} if cursor else {})}


def load_json_arg(value: str) -> Any:
    """A JSON argument given inline or as `@file.json`."""
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    return json.loads(text)
