"""Webhooks: a job's terminal state, told to its `callback_url`, signed, through an outbox.

- `check_callback` (submit): the URL resolves only to addresses the policy allows.
- `enqueue_terminal` (every terminal transition, in its transaction): one outbox row (and,
  with `MODELPRESS_MLFLOW_TRACKING_URI` set, an `mlflow.run` row that the sender hands to
  app/tracking/ instead of POSTing it).
- `deliver_due` (the housekeeping tick): claim due rows, POST them, retry with exponential
  backoff until `webhook_max_attempts`, then `dead` with the last error.

The body is JSON signed with HMAC-SHA256 (`X-ModelPress-Signature: sha256=<hex>`); it carries the
delivery id (stable across retries: deduplicate on it) and the send time (`timestamp`, also in
`X-ModelPress-Timestamp`: refuse old ones), so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app import __version__
from app.core.config import Settings, get_settings
from app.core.errors import SpecInvalid
from app.db.base import utcnow
from app.db.orm import DeliveryStatus, JobStatus
from app.db.orm.job import TERMINAL
from app.db.session import session_scope
from app.tracking import service as tracking
from app.webhooks import repository
from app.webhooks.address import AddressRefused, resolve
from app.webhooks.delivery import Attempt, post

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-ModelPress-Signature"
DELIVERY_HEADER = "X-ModelPress-Delivery"
TIMESTAMP_HEADER = "X-ModelPress-Timestamp"
EVENT_HEADER = "X-ModelPress-Event"
_DERIVATION_LABEL = b"modelpress-webhook-secret"


def check_callback(url: str, settings: Settings) -> None:
    """Raises SpecInvalid (at `/callback_url`) when the URL's host resolves somewhere refused."""
    try:
        resolve(url, settings.webhook_allow_private)
    except AddressRefused as exc:
        raise SpecInvalid(f"callback_url: {exc}.", pointer="/callback_url") from exc


def signing_secret(settings: Settings) -> bytes:
    """`MODELPRESS_WEBHOOK_SECRET`, or hex(HMAC-SHA256(api_key_pepper, label)) when unset."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value().encode()
    pepper = settings.api_key_pepper.get_secret_value().encode()
    return hmac.new(pepper, _DERIVATION_LABEL, hashlib.sha256).hexdigest().encode()


def sign(secret: bytes, body: bytes) -> str:
    """The `X-ModelPress-Signature` value of `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _summary(verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    if not verdict:
        return None
    reasons = [str(r)[:300] for r in (verdict.get("reasons") or [])[:10]]
    return {"met": verdict.get("met"), "reasons": reasons}


def enqueue_terminal(
    session: Session, job_id: str, verdict: dict[str, Any] | None = None
) -> str | None:
    """Write the outbox row of the job's terminal state, in the caller's transaction (call it
    right after the transition succeeded); returns the delivery id (None: no callback_url).
    With `MODELPRESS_MLFLOW_TRACKING_URI` set, an `mlflow.run` row is written beside it."""
    job = repository.terminal_view(session, job_id)
    if job is None or job["status"] not in TERMINAL:
        return None
    _enqueue_tracking(session, job, verdict)
    url = (job.get("spec") or {}).get("callback_url")
    if not url:
        session.flush()
        return None
    error = job["error"] or {}
    finished: datetime | None = job["finished_at"]
    links = {"job": f"/v1/jobs/{job_id}"}
    if job["status"] == JobStatus.succeeded:
        links["report"] = f"/v1/jobs/{job_id}/report"
    payload = {
        "event": f"job.{job['status']}",
        "occurred_at": (finished or utcnow()).isoformat(),
        "job": {
            "id": job_id,
            "model_id": job["model_id"],
            "status": str(job["status"]),
            "error_code": error.get("code"),
            "verdict": _summary(verdict),
        },
        "links": links,
    }
    values = {"tenant_id": job["tenant_id"], "job_id": job_id, "event": payload["event"]}
    delivery = repository.add(session, {**values, "url": url, "payload": payload})
    session.flush()
    return delivery.id


def _enqueue_tracking(
    session: Session, job: dict[str, Any], verdict: dict[str, Any] | None
) -> None:
    settings = get_settings()
    if not settings.mlflow_tracking_uri:
        return
    payload = tracking.payload_of(session, job["id"], verdict, settings)
    if payload is not None:
        values = {"tenant_id": job["tenant_id"], "job_id": job["id"], "event": tracking.EVENT}
        repository.add(session, {**values, "url": settings.mlflow_tracking_uri, "payload": payload})


def body_of(delivery_id: str, payload: dict[str, Any], timestamp: int) -> bytes:
    """The exact bytes sent (and signed) for one attempt."""
    document = {"delivery_id": delivery_id, "timestamp": timestamp, **payload}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def backoff_seconds(attempt: int, settings: Settings) -> float:
    """The wait after failed attempt number `attempt` (1-based): base, 2x base, 4x base..."""
    delay = settings.webhook_backoff_seconds * 2 ** min(attempt - 1, 30)
    return float(min(delay, settings.webhook_backoff_max_seconds))


def deliver_due(settings: Settings, now: datetime | None = None) -> int:
    """Send up to `webhook_per_tick` due deliveries; returns how many this call attempted.

    Safe with several schedulers: each row is claimed by a conditional update first, and an
    attempt's outcome is recorded only while it still owns the row. After one failed MLflow
    run, the round leaves the other MLflow rows for the next one (a tracking server that hangs
    costs one timeout per round, not one per row, and the webhooks go on).
    """
    with session_scope() as session:
        ids = repository.due_ids(session, now or utcnow(), settings.webhook_per_tick)
    attempted, tracking_down = 0, False
    for delivery_id in ids:
        result = _attempt(delivery_id, settings, now or utcnow(), skip_tracking=tracking_down)
        if result is not None:
            attempted += 1
            tracking_down = tracking_down or result == "tracking_failed"
    return attempted


def _attempt(
    delivery_id: str, settings: Settings, now: datetime, skip_tracking: bool = False
) -> str | None:
    """One attempt: None when not attempted, else "sent", "failed" or "tracking_failed"."""
    with session_scope() as session:
        due = repository.get_any(session, delivery_id)
        if due is None:
            return None
        tracked = due.event == tracking.EVENT
        if tracked and skip_tracking:
            return None
        lease = (
            tracking.lease_seconds(settings)
            if tracked
            else 4 * settings.webhook_timeout_seconds + 30
        )
        attempt = repository.claim(session, delivery_id, now, lease)
        delivery = repository.get_any(session, delivery_id) if attempt else None
        if attempt is None or delivery is None:
            return None
        url, payload = delivery.url, dict(delivery.payload)
    if tracked:  # an MLflow run, not an HTTP POST: the operator's own server, no address policy
        error = tracking.send(delivery_id, url, payload, settings)
        result = Attempt(None, error)
    else:
        result = _send(delivery_id, url, payload, settings)
    _record(delivery_id, attempt, result, settings, now)
    if result.ok:
        return "sent"
    return "tracking_failed" if tracked else "failed"


def _send(delivery_id: str, url: str, payload: dict[str, Any], settings: Settings) -> Attempt:
    try:
        target = resolve(url, settings.webhook_allow_private)
    except AddressRefused as exc:
        return Attempt(None, f"refused: {exc}"[:300])
    timestamp = int(utcnow().timestamp())
    body = body_of(delivery_id, payload, timestamp)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"ModelPress-Webhook/{__version__}",
        SIGNATURE_HEADER: sign(signing_secret(settings), body),
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        EVENT_HEADER: str(payload.get("event", "")),
    }
    return post(target, body, headers, settings.webhook_timeout_seconds)


def _record(
    delivery_id: str, attempt: int, result: Attempt, settings: Settings, now: datetime
) -> None:
    values: dict[str, Any] = {"last_status_code": result.status_code, "last_error": result.error}
    if result.ok:
        values |= {"status": DeliveryStatus.delivered, "delivered_at": utcnow()}
    elif attempt >= settings.webhook_max_attempts:
        values["status"] = DeliveryStatus.dead
        log.warning(
            "webhook delivery dead",
            extra={"delivery_id": delivery_id, "attempts": attempt, "error": result.error},
        )
    else:
        delay = timedelta(seconds=backoff_seconds(attempt, settings))
        values |= {"status": DeliveryStatus.pending, "next_attempt_at": now + delay}
    with session_scope() as session:
        repository.finish(session, delivery_id, attempt, values)
