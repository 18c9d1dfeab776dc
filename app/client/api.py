"""A thin HTTP client of the ModelPress API (httpx only: `pip install modelpress` is enough)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

# The wire names of the terminal job statuses (app.db.orm.JobStatus on the server); written out
# here because the client installs without the server side and must not import the ORM.
TERMINAL = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """A problem+json answer (or a transport failure), with its body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('code', '')}: {problem.get('detail', problem)}")
        self.status, self.problem = status, problem


class Client:
    """The `/v1` API over one httpx connection pool; every error answer raises `ApiError`."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def _check(self, response: httpx.Response) -> httpx.Response:
        """The response itself, or `ApiError` with its problem body for a 4xx/5xx."""
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:500]}
            raise ApiError(response.status_code, problem)
        return response

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON resource."""
        return self._check(self.http.get(path, params=params or None)).json()

    def delete(self, path: str) -> None:
        """DELETE a resource."""
        self._check(self.http.delete(path))

    def upload(self, path: str, file: Path, **fields: str | None) -> dict[str, Any]:
        """POST a file as multipart `file`, with the form fields that are not None."""
        with file.open("rb") as fh:
            files = {"file": (file.name, fh, "application/octet-stream")}
            data = {k: v for k, v in fields.items() if v is not None}
            return self._check(self.http.post(path, files=files, data=data)).json()

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """POST a job spec; the same Idempotency-Key and spec return the first job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._check(self.http.post("/v1/jobs", json=spec, headers=headers)).json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job."""
        return self._check(self.http.post(f"/v1/jobs/{job_id}/cancel")).json()

    def wait_model(self, model_id: str, timeout: float = 600) -> dict[str, Any]:
        """Poll a model until its inspection is over (`ready` or `rejected`)."""
        deadline = time.monotonic() + timeout
        while (model := self.get(f"/v1/models/{model_id}"))["status"] == "validating":
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {model_id} still validating")
            time.sleep(0.5)
        return model

    def wait_job(
        self, job_id: str, on_progress: Any = None, timeout: float = 86400
    ) -> dict[str, Any]:
        """Poll a job until it is terminal, calling `on_progress` when its progress changes."""
        deadline, last = time.monotonic() + timeout, None
        while (job := self.get(f"/v1/jobs/{job_id}"))["status"] not in TERMINAL:
            if on_progress and job.get("progress") != last:
                on_progress(job)
                last = job.get("progress")
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}")
            time.sleep(1.0)
        return job

    def download(self, path: str, dest: Path) -> Path:
        """Stream a file to `dest` (its folders are created)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.http.stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()  # a streamed body must be read before `_check` parses the problem
            self._check(response)
            with dest.open("wb") as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
        return dest


def load_json_arg(value: str) -> Any:
    """A JSON argument given inline or as `@file.json`."""
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    return json.loads(text)
