"""The read-only jobs page at `/` (app/http/page.py): server-rendered rows, a strict CSP, escaping.

The live part (events read by the page's script, the key prompt with auth on) runs in a real
browser in tests/integration/test_page_chromium.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from support import report_document

from app.core.auth import create_key
from app.core.config import get_settings
from app.db.orm import Job, MlModel
from app.db.session import session_scope
from app.main import create_app

HOSTILE = '</td><script>alert("name")</script><img src=x onerror=alert(1)>&amp;'


def _set_job(env: dict[str, str], job_id: str, **values: Any) -> None:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _row(page: str, job_id: str) -> str:
    match = re.search(rf'<tr class="job" data-job-id="{job_id}".*?</tr>', page, re.S)
    assert match, page
    return match.group(0)


def test_page_lists_recent_jobs_with_status_and_steps(client: Any, job: dict[str, Any]) -> None:
    response = client.get("/")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    row = _row(response.text, job["id"])
    assert 'data-status="queued"' in row
    assert '<td class="ops">quantize</td>' in row
    assert '<td class="model" title="{}">mlp.onnx</td>'.format(job["model_id"]) in row
    assert f'href="/v1/jobs/{job["id"]}"' in row
    assert 'data-auth="off"' in response.text


def test_page_without_jobs_says_how_to_submit_one(client: Any) -> None:
    page = client.get("/").text

    assert 'class="job"' not in page
    assert re.search(r'<p id="empty" class="notice">No jobs yet', page)


def test_page_has_a_strict_csp_and_nothing_inline(client: Any, job: dict[str, Any]) -> None:
    response = client.get("/")

    csp = {
        d.strip().split(" ", 1)[0]: d.strip().split(" ", 1)[1]
        for d in response.headers["content-security-policy"].split(";")
    }
    assert csp["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert csp[directive] == "'self'", directive
    assert csp["base-uri"] == csp["form-action"] == csp["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    page = response.text
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/page/jobs.js" defer>']
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+\s*=", page)  # no inline event handler either
    assert "http://" not in page and "https://" not in page  # nothing from a CDN


def test_page_assets_are_served_from_the_package(client: Any) -> None:
    script = client.get("/static/page/jobs.js")
    style = client.get("/static/page/jobs.css")

    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "sseEvents" in script.text and "innerHTML" not in script.text
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


def test_page_escapes_a_hostile_model_name_and_error(
    client: Any, env: dict[str, str], job: dict[str, Any]
) -> None:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(update(MlModel).where(MlModel.id == job["model_id"]).values(name=HOSTILE))
    error = {"title": "<b>Failed</b>", "detail": "<script>alert('detail')</script>", "code": "x"}
    _set_job(env, job["id"], status="failed", error=error)

    page = client.get("/").text

    assert HOSTILE not in page and "<script>alert" not in page and "<b>Failed" not in page
    row = _row(page, job["id"])
    assert "&lt;/td&gt;&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;" in row
    assert "&amp;amp;" in row  # an entity in the name shows as typed, not decoded
    assert "&lt;b&gt;Failed&lt;/b&gt;: &lt;script&gt;alert(&#39;detail&#39;)" in row
    assert row.count("<td") == 8  # the name closed no cell


CHECKS = ["met: size 0.25x <= 0.5x", "missed: speedup 1.1x >= 2.0x at every batch size"]


@pytest.mark.parametrize(
    ("met", "shown"),
    [
        (True, "met"),
        (False, "not met: speedup 1.1x &gt;= 2.0x at every batch size"),
        (None, "no budget"),
    ],
)
def test_succeeded_job_shows_its_verdict_and_links(
    client: Any,
    env: dict[str, str],
    job: dict[str, Any],
    store_artifact: Callable[..., str],
    met: bool | None,
    shown: str,
) -> None:
    store_artifact(job["id"], "model.onnx", b"onnx bytes", "application/octet-stream")
    document = report_document(job["id"], met=met)
    document["verdict"]["reasons"] = CHECKS
    store_artifact(job["id"], "report.json", json.dumps(document).encode(), "application/json")
    store_artifact(job["id"], "report.html", b"<!doctype html><p>r</p>", "text/html")
    _set_job(env, job["id"], status="succeeded", progress={"fraction": 1.0, "message": "done"})

    row = _row(client.get("/").text, job["id"])

    every = "met: size 0.25x &lt;= 0.5x; missed: speedup 1.1x &gt;= 2.0x at every batch size"
    assert f'title="{every}">{shown}</td>' in row, row  # every check in the tooltip
    assert f'href="/v1/jobs/{job["id"]}/report.html"' in row
    assert f'href="/v1/jobs/{job["id"]}/report"' in row
    assert f'href="/v1/jobs/{job["id"]}/artifacts/model.onnx"' in row
    assert 'value="1.0"' in row and ">done<" in row


def test_unreadable_report_leaves_the_verdict_empty(
    client: Any, env: dict[str, str], job: dict[str, Any], store_artifact: Callable[..., str]
) -> None:
    store_artifact(job["id"], "report.json", b'{"not": "a report"}', "application/json")
    _set_job(env, job["id"], status="succeeded")

    response = client.get("/")

    assert response.status_code == 200
    assert '<td class="verdict verdict-none" title=""></td>' in _row(response.text, job["id"])


def test_with_auth_on_the_page_is_a_shell_that_asks_for_the_key(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, mlp_onnx: Any
) -> None:
    monkeypatch.setenv("MODELPRESS_AUTH_REQUIRED", "true")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
            key = create_key(session, "tenant-a", get_settings())
        auth = {"Authorization": f"Bearer {key}"}
        model = client.post(
            "/v1/models", files={"file": ("m.onnx", mlp_onnx.read_bytes())}, headers=auth
        )
        assert model.status_code == 201, model.text

        response = client.get("/")

    assert response.status_code == 200
    page = response.text
    assert 'data-auth="required"' in page
    assert '<form id="key-form" hidden>' in page  # the script shows it when no key is kept
    assert 'class="job"' not in page and model.json()["id"] not in page
