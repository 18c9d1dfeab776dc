"""`/v1/jobs` after submission: cancel, read, list with filters and pages (artifact downloads and
reports: tests/artifacts). No worker runs here: jobs stay `queued` unless the test cancels them."""

from __future__ import annotations

import uuid
from typing import Any

from support import assert_problem


def _submit(client: Any, model_id: str) -> str:
    spec = {"model_id": model_id, "steps": [{"op": "optimize"}]}
    return str(client.post("/v1/jobs", json=spec).json()["id"])


# ---------------------------------------------------------------- cancel (JOB-12)


def test_cancel_queued_job_is_cancelled(client: Any, job: dict[str, Any]) -> None:
    response = client.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["cancel_requested"] is True
    assert body["finished_at"] is not None


def test_cancelled_job_reads_back_cancelled(client: Any, job: dict[str, Any]) -> None:
    client.post(f"/v1/jobs/{job['id']}/cancel")

    response = client.get(f"/v1/jobs/{job['id']}")

    assert response.json()["status"] == "cancelled"


def test_cancel_again_is_409_already_terminal(client: Any, job: dict[str, Any]) -> None:
    client.post(f"/v1/jobs/{job['id']}/cancel")

    response = client.post(f"/v1/jobs/{job['id']}/cancel")

    assert_problem(response, 409, "already_terminal")


def test_cancel_unknown_job_is_404(client: Any) -> None:
    response = client.post(f"/v1/jobs/{uuid.uuid4()}/cancel")

    assert_problem(response, 404, "not_found")


# ---------------------------------------------------------------- reads


def test_get_unknown_job_is_404_problem(client: Any) -> None:
    response = client.get(f"/v1/jobs/{uuid.uuid4()}")

    assert_problem(response, 404, "not_found")


def test_list_filters_by_status(client: Any, model_id: str) -> None:
    kept, cancelled = _submit(client, model_id), _submit(client, model_id)
    client.post(f"/v1/jobs/{cancelled}/cancel")

    queued = client.get("/v1/jobs", params={"status": "queued"}).json()
    done = client.get("/v1/jobs", params={"status": "cancelled"}).json()

    assert [j["id"] for j in queued["items"]] == [kept]
    assert [j["id"] for j in done["items"]] == [cancelled]


def test_unknown_status_filter_is_422(client: Any) -> None:
    response = client.get("/v1/jobs", params={"status": "done"})

    assert_problem(response, 422, "validation_error")


def test_list_pages_walk_every_job_exactly_once(client: Any, model_id: str) -> None:
    created = [_submit(client, model_id) for _ in range(4)]

    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 1, "status": "queued"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))


def test_model_with_jobs_cannot_be_deleted(client: Any, model_id: str, job: dict[str, Any]) -> None:
    response = client.delete(f"/v1/models/{model_id}")

    assert_problem(response, 409, "model_in_use")
