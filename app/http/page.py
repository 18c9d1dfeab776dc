"""`GET /`: the read-only jobs page (server-rendered, no CDN, a strict Content-Security-Policy).

With auth off the server renders the default tenant's recent jobs; with auth on it cannot know
the tenant without a key, so it renders a shell whose script (`static/jobs.js`) asks for the key
once, keeps it in sessionStorage and reads `/v1/jobs` with it. Either way the script follows
each queued or running job live through `GET /v1/jobs/{id}/events` (read with `fetch`
streaming, so the Bearer header goes along). Every value from a user or a model is escaped:
Jinja2's autoescape here, `textContent` in the script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape
from sqlalchemy.orm import Session

from app.artifacts import service as artifacts
from app.core.auth import default_tenant_id
from app.core.errors import AppError
from app.core.storage import Storage
from app.http.deps import SessionDep, SettingsDep, StorageDep
from app.jobs import service as jobs
from app.jobs.schemas import JobRead
from app.ml_models import service as ml_models

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static/page"
PAGE_LIMIT = 20  # recent jobs on the page
REPORT_NAMES = ("report.html", "report.json")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class ArtifactLink:
    name: str
    kind_class: str  # the kind reduced to [a-z0-9-], for a CSS class


@dataclass(frozen=True)
class JobRow:
    """One job as the page shows it (`static/jobs.js` builds the same row from the API)."""

    id: str
    short_id: str
    model_id: str
    model_name: str
    ops: str
    status: str
    fraction: float
    message: str
    verdict: str
    verdict_class: str
    verdict_title: str
    has_report: bool
    artifacts: list[ArtifactLink]
    created: str
    created_iso: str


def install_page(app: FastAPI) -> None:
    """Mount the page at `/` and its script and stylesheet under `/static/page`."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="page-assets")
    app.include_router(router)


@router.get("/", response_class=HTMLResponse)
def jobs_page(session: SessionDep, settings: SettingsDep, storage: StorageDep) -> HTMLResponse:
    """The page: rows rendered here with auth off, a shell that asks for the key with auth on."""
    rows: list[JobRow] = []
    if not settings.auth_required:
        tenant_id = default_tenant_id(session)
        session.commit()  # the default tenant may have just been created
        rows = recent_rows(session, storage, tenant_id)
    html = _template().render(
        rows=rows,
        auth_required=settings.auth_required,
        limit=PAGE_LIMIT,
        static=STATIC_URL,
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)


def recent_rows(session: Session, storage: Storage, tenant_id: str) -> list[JobRow]:
    """The tenant's most recent jobs, newest first, with model names and verdicts."""
    page = jobs.list_jobs(session, tenant_id, None, PAGE_LIMIT, None)
    names: dict[str, str] = {}
    for job in page.items:
        if job.model_id not in names:
            names[job.model_id] = _model_name(session, tenant_id, job.model_id)
    return [
        to_row(job, names[job.model_id], _verdict(session, storage, tenant_id, job))
        for job in page.items
    ]


def to_row(job: JobRead, model_name: str, verdict: dict[str, Any] | None) -> JobRow:
    """What one row shows: `verdict` is the report's (None: no report, or not readable)."""
    names = {a.name for a in job.artifacts}
    error = job.error or {}
    message = (
        ": ".join(str(error[k]) for k in ("title", "detail") if error.get(k))
        if job.status == "failed" and error
        else str(job.progress.get("message", ""))
    )
    text, css, title = verdict_text(verdict if job.status == "succeeded" else None)
    return JobRow(
        id=job.id,
        short_id=job.id[:8],
        model_id=job.model_id,
        model_name=model_name,
        ops=ops_of(job.spec),
        status=str(job.status),
        fraction=_fraction(job.progress.get("fraction")),
        message=message,
        verdict=text,
        verdict_class=css,
        verdict_title=title,
        has_report="report.html" in names,
        artifacts=[
            ArtifactLink(a.name, _css(a.kind)) for a in job.artifacts if a.name not in REPORT_NAMES
        ],
        created=job.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        created_iso=job.created_at.astimezone(UTC).isoformat(),
    )


def ops_of(spec: dict[str, Any]) -> str:
    """The job's ops joined by `+` (as the metrics label them), or `auto`."""
    if spec.get("recipe") == "auto":
        return "auto"
    return "+".join(str(step.get("op", "?")) for step in spec.get("steps") or [])


def verdict_text(verdict: dict[str, Any] | None) -> tuple[str, str, str]:
    """The verdict cell's text, CSS class and tooltip: met, not met (with the checks it missed;
    the tooltip lists every check), or no budget."""
    if verdict is None:
        return "", "verdict-none", ""
    reasons = [str(r) for r in verdict.get("reasons") or []]
    every = "; ".join(reasons)
    if verdict.get("met") is True:
        return "met", "verdict-met", every
    if verdict.get("met") is False:
        missed = "; ".join(r.removeprefix("missed: ") for r in reasons if r.startswith("missed"))
        return "not met" + (f": {missed}" if missed else ""), "verdict-missed", every
    return "no budget", "verdict-none", every


def _model_name(session: Session, tenant_id: str, model_id: str) -> str:
    try:
        return ml_models.get_model_or_raise(session, tenant_id, model_id).name
    except AppError:  # deleted or expired since: the job still shows, by the model's id
        return model_id


def _verdict(
    session: Session, storage: Storage, tenant_id: str, job: JobRead
) -> dict[str, Any] | None:
    if job.status != "succeeded" or "report.json" not in {a.name for a in job.artifacts}:
        return None
    try:
        report = artifacts.get_report(
            session=session, storage=storage, tenant_id=tenant_id, job_id=job.id
        )
    except (AppError, OSError, ValueError):  # a report that cannot be read shows no verdict
        return None
    return report.verdict.model_dump(mode="json")


def _fraction(value: Any) -> float:
    try:
        return min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return 0.0


def _css(value: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", value.lower())[:40]


@cache
def _template() -> Template:
    env = Environment(
        loader=PackageLoader("app.http", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
    )
    return env.get_template("jobs.html.j2")
