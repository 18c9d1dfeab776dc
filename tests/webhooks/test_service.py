"""Webhooks end to end against a real HTTP receiver on 127.0.0.1: the outbox row commits with
the terminal transition, the body is signed, failures are retried with growing delays, then
`dead`; refused addresses get no connection (API-14)."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from support import assert_problem

from app.core.auth import default_tenant_id
from app.core.config import get_settings
from app.db.base import utcnow
from app.db.orm import Job, JobStatus, MlModel, WebhookDelivery
from app.db.session import session_scope
from app.jobs import repository as jobs
from app.webhooks import address, delivery
from app.webhooks import service as webhooks
from worker import reaper
from worker.execute import _commit_success, _fail
from worker.sandbox.protocol import SandboxResult
from worker.sandbox.supervisor import Outcome

SECRET = "test-webhook-secret"


class Receiver:
    """A threaded HTTP server that answers POSTs with scripted statuses and records them."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.script: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((dict(self.headers.items()), body))
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def hooks(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings for webhook tests: loopback allowed, a known secret, a 60 s first backoff."""
    values = {
        "MODELPRESS_WEBHOOK_ALLOW_PRIVATE": "true",
        "MODELPRESS_WEBHOOK_SECRET": SECRET,
        "MODELPRESS_WEBHOOK_BACKOFF_SECONDS": "60",
        "MODELPRESS_WEBHOOK_TIMEOUT_SECONDS": "5",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return {**env, **values}


def _set(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for key, value in values.items():
        monkeypatch.setenv(f"MODELPRESS_{key.upper()}", value)
    get_settings.cache_clear()


def _ready_model(session: Any) -> MlModel:
    model = MlModel(
        tenant_id=default_tenant_id(session),
        name="m.onnx",
        format="onnx",
        size_bytes=1,
        sha256="0" * 64,
        storage_key="sha256/00/00/" + "0" * 64,
        status="ready",
        inputs=[{"name": "input", "dtype": "float32", "shape": ["batch", 32]}],
        outputs=[{"name": "output", "dtype": "float32", "shape": ["batch", 10]}],
    )
    session.add(model)
    session.flush()
    return model


def _running_job(url: str | None) -> tuple[str, int]:
    """A job with this callback_url, claimed by a worker: (job id, attempt)."""
    with session_scope() as session:
        model = _ready_model(session)
        spec = {"model_id": model.id, "steps": [{"op": "quantize"}]}
        if url:
            spec["callback_url"] = url
        job = Job(tenant_id=model.tenant_id, model_id=model.id, spec=spec, spec_sha256="0")
        session.add(job)
        session.flush()
        job_id = job.id
    with session_scope() as session:
        attempt = jobs.claim(session, job_id, "test-worker", 60)
    assert attempt is not None
    return job_id, attempt


def _deliveries(job_id: str) -> list[WebhookDelivery]:
    with session_scope() as session:
        stmt = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
        return list(session.scalars(stmt))


def _failed_job(url: str | None) -> str:
    job_id, attempt = _running_job(url)
    _fail(job_id, attempt, JobStatus.failed, {"code": "job_error", "detail": "boom"})
    return job_id


# ---------------------------------------------------------------- the outbox row


def test_a_job_failed_by_fail_has_exactly_one_delivery(hooks: dict[str, str]) -> None:
    job_id, attempt = _running_job("http://127.0.0.1:9/hook")

    _fail(job_id, attempt, JobStatus.failed, {"code": "job_error", "detail": "boom"})
    _fail(job_id, attempt, JobStatus.failed, {"code": "job_error", "detail": "again"})

    [delivery] = _deliveries(job_id)
    assert (delivery.status, delivery.event, delivery.attempts) == ("pending", "job.failed", 0)
    assert delivery.payload["job"]["error_code"] == "job_error"
    assert delivery.payload["links"] == {"job": f"/v1/jobs/{job_id}"}


def test_a_stale_attempt_moves_nothing_and_writes_no_delivery(hooks: dict[str, str]) -> None:
    job_id, attempt = _running_job("http://127.0.0.1:9/hook")

    _fail(job_id, attempt + 1, JobStatus.failed, {"code": "job_error", "detail": "late"})

    assert _deliveries(job_id) == []
    with session_scope() as session:
        assert session.get(Job, job_id).status == JobStatus.running  # type: ignore[union-attr]


def test_a_job_without_callback_url_has_no_delivery(hooks: dict[str, str]) -> None:
    assert _deliveries(_failed_job(None)) == []


def test_a_published_job_delivers_its_verdict_and_report_link(hooks: dict[str, str]) -> None:
    job_id, attempt = _running_job("http://127.0.0.1:9/hook")
    verdict = {"met": False, "reasons": ["speedup 1.1 < 1.2 at batch 1"], "notes": ["n"]}
    outcome = Outcome(result=SandboxResult(ok=True, verdict=verdict), returncode=0)
    with session_scope() as session:
        job = session.get(Job, job_id)

    _commit_success(job, attempt, outcome, [])  # type: ignore[arg-type]

    [delivery] = _deliveries(job_id)
    assert delivery.event == "job.succeeded"
    assert delivery.payload["job"]["verdict"] == {
        "met": False,
        "reasons": ["speedup 1.1 < 1.2 at batch 1"],
    }
    assert delivery.payload["links"]["report"] == f"/v1/jobs/{job_id}/report"


def test_the_reaper_failing_a_job_worker_lost_writes_one_delivery(hooks: dict[str, str]) -> None:
    job_id, _ = _running_job("http://127.0.0.1:9/hook")
    with session_scope() as session:
        past = utcnow() - timedelta(seconds=5)
        session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=past, attempt=99)
        )

    reaper.reap_expired(get_settings())

    [delivery] = _deliveries(job_id)
    assert delivery.payload["job"]["error_code"] == "worker_lost"


def test_cancelling_a_queued_job_writes_one_delivery(
    hooks: dict[str, str], client: Any, receiver: Receiver
) -> None:
    with session_scope() as session:
        model_id = _ready_model(session).id
    spec = {"model_id": model_id, "steps": [{"op": "quantize"}], "callback_url": receiver.url}
    job_id = client.post("/v1/jobs", json=spec).json()["id"]

    response = client.post(f"/v1/jobs/{job_id}/cancel")

    assert response.status_code == 200, response.text
    [delivery] = _deliveries(job_id)
    assert delivery.event == "job.cancelled"


# ---------------------------------------------------------------- sending


def test_the_tick_delivers_a_signed_body(hooks: dict[str, str], receiver: Receiver) -> None:
    job_id = _failed_job(receiver.url)

    reaper.tick(get_settings())

    [(headers, body)] = receiver.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-ModelPress-Signature"], expected)
    document = json.loads(body)
    [delivery] = _deliveries(job_id)
    assert headers["X-ModelPress-Delivery"] == document["delivery_id"] == delivery.id
    assert headers["X-ModelPress-Timestamp"] == str(document["timestamp"])
    assert headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert document["event"] == headers["X-ModelPress-Event"] == "job.failed"
    assert document["job"]["id"] == job_id
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)


def test_a_failing_receiver_is_retried_with_growing_delays(
    hooks: dict[str, str], receiver: Receiver
) -> None:
    receiver.script = [500, 503]
    job_id = _failed_job(receiver.url)
    settings, now = get_settings(), utcnow()
    delays = []

    for _ in range(2):
        assert webhooks.deliver_due(settings, now=now) == 1
        [row] = _deliveries(job_id)
        assert row.status == "pending" and row.last_attempt_at is not None
        delays.append((row.next_attempt_at - row.last_attempt_at).total_seconds())
        too_early = row.next_attempt_at - timedelta(seconds=1)
        assert webhooks.deliver_due(settings, now=too_early) == 0
        now = row.next_attempt_at
    assert webhooks.deliver_due(settings, now=now) == 1

    assert delays == [60.0, 120.0]
    [row] = _deliveries(job_id)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
    ids = {headers["X-ModelPress-Delivery"] for headers, _ in receiver.requests}
    assert len(receiver.requests) == 3 and ids == {row.id}


def test_a_delivery_is_dead_after_the_last_attempt(
    hooks: dict[str, str], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set(monkeypatch, webhook_max_attempts="2", webhook_backoff_seconds="0")
    receiver.script = [500, 500, 500]
    job_id = _failed_job(receiver.url)

    for _ in range(3):
        webhooks.deliver_due(get_settings(), now=utcnow() + timedelta(hours=1))

    [row] = _deliveries(job_id)
    assert (row.status, row.attempts, row.last_error) == ("dead", 2, "HTTP 500")
    assert len(receiver.requests) == 2


def test_redirects_are_not_followed(hooks: dict[str, str], receiver: Receiver) -> None:
    receiver.script = [302]
    job_id = _failed_job(receiver.url)

    webhooks.deliver_due(get_settings())

    [row] = _deliveries(job_id)
    assert len(receiver.requests) == 1
    assert row.last_status_code == 302 and "redirects are not followed" in str(row.last_error)


def test_a_name_resolving_to_loopback_is_refused_at_send(
    hooks: dict[str, str], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allowed at submit, rebound to 127.0.0.1 later: no connection is made (API-14)."""
    job_id = _failed_job(f"http://hooks.example.test:{receiver.port}/hook")
    _set(monkeypatch, webhook_allow_private="false")
    monkeypatch.setattr(address, "getaddrinfo", lambda host, port: ["127.0.0.1"])

    webhooks.deliver_due(get_settings())

    [row] = _deliveries(job_id)
    assert receiver.requests == []
    assert row.status == "pending" and str(row.last_error).startswith("refused: ")
    assert "127.0.0.1" in str(row.last_error)


def test_the_sender_connects_to_the_checked_address_with_the_name_as_host(
    hooks: dict[str, str], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def _resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(address, "getaddrinfo", _resolver)
    job_id = _failed_job(f"http://hooks.example.test:{receiver.port}/hook")

    webhooks.deliver_due(get_settings())

    [(headers, _)] = receiver.requests
    assert headers["Host"] == f"hooks.example.test:{receiver.port}"
    assert calls == ["hooks.example.test"]  # one lookup, the one that was checked
    assert _deliveries(job_id)[0].status == "delivered"


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    argv += ["-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"]
    argv += ["-addext", f"subjectAltName=DNS:{name}"]
    subprocess.run(
        argv,
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("served_name", ["hooks.example.test", "other.example.test"])
def test_https_goes_to_the_pinned_address_with_sni_and_a_verified_name(
    hooks: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served_name: str
) -> None:
    """The socket goes to 127.0.0.1, TLS still names (and verifies) hooks.example.test: a
    certificate for another name fails the delivery."""
    cert, key = _certificate(tmp_path, served_name)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    server_side.sni_callback = lambda sock, name, ctx: seen_sni.append(name)  # type: ignore[assignment]
    trusting = ssl.create_default_context(cafile=str(cert))
    real_client = httpx.Client
    monkeypatch.setattr(delivery.httpx, "Client", lambda **kw: real_client(**kw, verify=trusting))
    monkeypatch.setattr(address, "getaddrinfo", lambda host, port: ["127.0.0.1"])
    receiver = Receiver(tls=server_side)
    try:
        job_id = _failed_job(f"https://hooks.example.test:{receiver.port}/hook")
        webhooks.deliver_due(get_settings())
    finally:
        receiver.close()

    [row] = _deliveries(job_id)
    assert seen_sni[:1] == ["hooks.example.test"]
    if served_name == "hooks.example.test":
        assert row.status == "delivered"
        [(headers, _)] = receiver.requests
        assert headers["Host"] == f"hooks.example.test:{receiver.port}"
    else:
        assert row.status == "pending" and receiver.requests == []
        assert "certificate" in str(row.last_error).lower()


def test_two_schedulers_send_a_delivery_once(hooks: dict[str, str], receiver: Receiver) -> None:
    job_id = _failed_job(receiver.url)
    settings = get_settings()
    threads = [threading.Thread(target=webhooks.deliver_due, args=(settings,)) for _ in range(4)]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(receiver.requests) == 1
    assert _deliveries(job_id)[0].attempts == 1


def test_the_secret_is_derived_from_the_pepper_when_unset(
    hooks: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELPRESS_WEBHOOK_SECRET")
    _set(monkeypatch, api_key_pepper="pepper-one")
    one = webhooks.signing_secret(get_settings())
    _set(monkeypatch, api_key_pepper="pepper-two")
    two = webhooks.signing_secret(get_settings())

    expected = hmac.new(b"pepper-one", b"modelpress-webhook-secret", hashlib.sha256).hexdigest()
    assert one == expected.encode() and one != two


# ---------------------------------------------------------------- submit


def _submit(client: Any, url: str) -> Any:
    with session_scope() as session:
        model_id = _ready_model(session).id
    spec = {"model_id": model_id, "steps": [{"op": "quantize"}], "callback_url": url}
    return client.post("/v1/jobs", json=spec)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "https://10.0.0.1/hook",
        "https://100.64.0.1/hook",
        "http://0.0.0.0:8000/",
        "https://hooks.internal.test/hook",  # resolves to 10.0.0.1 below
    ],
)
def test_private_callbacks_are_refused_at_submit(
    env: dict[str, str], client: Any, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(address, "getaddrinfo", lambda host, port: ["10.0.0.1"])

    response = _submit(client, url)

    body = assert_problem(response, 422, "spec_invalid")
    assert body["pointer"] == "/callback_url"
    assert "MODELPRESS_WEBHOOK_ALLOW_PRIVATE" in body["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "https://user:secret@example.com/hook",
        "https://example.com/" + "a" * 2100,
        "not a url",
    ],
)
def test_malformed_callbacks_are_refused_at_submit(
    env: dict[str, str], client: Any, url: str
) -> None:
    response = _submit(client, url)

    body = assert_problem(response, 422, "validation_error")
    assert [e["pointer"] for e in body["errors"]] == ["/callback_url"]


def test_a_loopback_callback_is_accepted_when_the_operator_allows_it(
    hooks: dict[str, str], client: Any, receiver: Receiver
) -> None:
    response = _submit(client, receiver.url)

    assert response.status_code == 202, response.text
    assert response.json()["spec"]["callback_url"] == receiver.url
