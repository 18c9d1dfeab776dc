"""API keys' `last_used_at`: written at most once a minute per key, never by the read itself."""

from __future__ import annotations

import datetime

from sqlalchemy import select, update

from app.core.auth import LastUsed, authenticate, create_key, record_use
from app.core.config import get_settings
from app.db.orm import ApiKey
from app.db.session import read_sessionmaker, session_scope


def test_last_used_is_due_once_per_key_and_period() -> None:
    now = [1000.0]
    throttle = LastUsed(every=60, clock=lambda: now[0])

    assert throttle.due("a") is True
    assert throttle.due("a") is False
    assert throttle.due("b") is True  # each key has its own period
    now[0] += 59.9
    assert throttle.due("a") is False
    now[0] += 0.2
    assert throttle.due("a") is True


def _key(url: str) -> tuple[str, str]:
    with session_scope(url) as session:
        key = create_key(session, "tenant-a", get_settings())
    return key, key.split("_")[1]


def _last_used(url: str, key_id: str) -> datetime.datetime | None:
    with session_scope(url) as session:
        return session.scalars(select(ApiKey.last_used_at).where(ApiKey.key_id == key_id)).one()


def test_authenticate_writes_nothing(env: dict[str, str]) -> None:
    url = env["MODELPRESS_DATABASE_URL"]
    key, key_id = _key(url)
    with read_sessionmaker(url)() as session:
        tenant_id = authenticate(session, f"Bearer {key}", get_settings())
        assert not session.dirty and not session.new
    assert tenant_id
    assert _last_used(url, key_id) is None


def test_record_use_writes_at_most_once_a_minute(env: dict[str, str]) -> None:
    url = env["MODELPRESS_DATABASE_URL"]
    _, key_id = _key(url)

    record_use(key_id, url)
    first = _last_used(url, key_id)
    record_use(key_id, url)  # another process within the minute: its write matches nothing
    assert first is not None
    assert _last_used(url, key_id) == first

    an_hour_ago = first - datetime.timedelta(hours=1)
    with session_scope(url) as session:
        session.execute(
            update(ApiKey).where(ApiKey.key_id == key_id).values(last_used_at=an_hour_ago)
        )
    record_use(key_id, url)
    latest = _last_used(url, key_id)
    assert latest is not None and latest > an_hour_ago


def test_record_use_of_an_unknown_key_does_nothing(env: dict[str, str]) -> None:
    record_use("0123456789abcdef", env["MODELPRESS_DATABASE_URL"])
