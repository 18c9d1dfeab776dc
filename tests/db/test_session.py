"""Engines and sessions: read transactions on SQLite lock nothing, writes still take the lock,
a write in a read session still works, and the pool size comes from the settings."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text

from app.core.config import get_settings
from app.db.session import (
    build_engine,
    get_engine,
    get_sessionmaker,
    read_sessionmaker,
    request_session,
)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'file.db'}"
    with get_engine(url).begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
        conn.execute(text("INSERT INTO t (v) VALUES ('first')"))
    yield url
    get_engine(url).dispose()


def _writer(url: str) -> sqlite3.Connection:
    """Another connection to the file (another process, say the worker), in autocommit mode."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=0)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_a_read_session_reads_while_another_connection_holds_the_write_lock(
    sqlite_url: str,
) -> None:
    other = _writer(sqlite_url)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (v) VALUES ('uncommitted')")
    try:
        with read_sessionmaker(sqlite_url)() as session:
            # With the write lock taken by `other`, BEGIN IMMEDIATE would wait for it (busy
            # timeout, then `database is locked`); a deferred read does not wait at all.
            rows = session.execute(text("SELECT v FROM t ORDER BY id")).scalars().all()
            session.commit()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert rows == ["first"]


def test_read_sessions_begin_deferred_and_write_sessions_immediate(sqlite_url: str) -> None:
    seen = _statements(get_engine(sqlite_url))
    with read_sessionmaker(sqlite_url)() as session:
        session.execute(text("SELECT 1"))
        session.commit()
    with get_sessionmaker(sqlite_url)() as session:
        session.execute(text("SELECT 1"))
        session.commit()

    begins = [s for s in seen if s.startswith("BEGIN")]
    assert begins == ["BEGIN", "BEGIN IMMEDIATE"]


def test_a_request_session_writes_until_its_commit_then_reads(sqlite_url: str) -> None:
    """What a POST does: write and commit, then read the answer without the write lock (held
    while the response is sent it would queue every other writer); a later write still works."""
    seen = _statements(get_engine(sqlite_url))
    session = request_session(sqlite_url)
    try:
        session.execute(text("INSERT INTO t (v) VALUES ('queued')"))
        session.commit()
        other = _writer(sqlite_url)
        other.execute("BEGIN IMMEDIATE")  # the worker writes meanwhile
        try:
            values = set(session.execute(text("SELECT v FROM t")).scalars())
        finally:
            other.execute("ROLLBACK")
            other.close()
        session.execute(text("INSERT INTO t (v) VALUES ('again')"))
        session.commit()
    finally:
        session.close()

    assert values == {"first", "queued"}
    assert [s for s in seen if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE", "BEGIN"]
    with read_sessionmaker(sqlite_url)() as check:
        assert check.execute(text("SELECT count(*) FROM t")).scalar() == 3


def test_a_write_session_waits_for_the_write_lock(sqlite_url: str) -> None:
    other = _writer(sqlite_url)
    other.execute("BEGIN IMMEDIATE")
    engine = build_engine(sqlite_url)  # an engine of its own: its busy timeout can be short

    @event.listens_for(engine, "connect")
    def _short_timeout(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=50")

    try:
        with engine.connect() as conn, pytest.raises(Exception, match="locked"):
            conn.execute(text("SELECT v FROM t"))  # the begin hook asks for the write lock
    finally:
        other.execute("ROLLBACK")
        other.close()
        engine.dispose()


def test_a_read_session_that_writes_after_another_commit_still_commits(sqlite_url: str) -> None:
    """A deferred transaction that read and then writes after another connection committed
    cannot upgrade (SQLITE_BUSY_SNAPSHOT); the read session switches to a write transaction
    before its first write instead."""
    other = _writer(sqlite_url)
    with read_sessionmaker(sqlite_url)() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 1  # the snapshot
        other.execute("INSERT INTO t (v) VALUES ('by the worker')")
        session.execute(text("INSERT INTO t (v) VALUES ('by the request')"))
        session.commit()
    other.close()

    with read_sessionmaker(sqlite_url)() as session:
        values = set(session.execute(text("SELECT v FROM t")).scalars())
    assert values == {"first", "by the worker", "by the request"}


def test_without_the_switch_that_write_fails(sqlite_url: str) -> None:
    """The hazard the switch avoids, on plain connections: a deferred read's stale snapshot
    cannot become a write transaction."""
    other, request = _writer(sqlite_url), _writer(sqlite_url)
    request.execute("PRAGMA busy_timeout=2000")
    request.execute("BEGIN")
    request.execute("SELECT count(*) FROM t").fetchall()
    other.execute("INSERT INTO t (v) VALUES ('by the worker')")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        request.execute("INSERT INTO t (v) VALUES ('by the request')")
    request.execute("ROLLBACK")
    other.close()
    request.close()


def test_a_savepoint_in_a_read_session_survives_the_switch_to_writing(sqlite_url: str) -> None:
    with read_sessionmaker(sqlite_url)() as session:
        session.execute(text("SELECT v FROM t")).all()
        with session.begin_nested():  # as `tenants.repository.add` inserts a tenant
            session.execute(text("INSERT INTO t (v) VALUES ('nested')"))
        session.commit()
    with read_sessionmaker(sqlite_url)() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 2


def test_a_rolled_back_write_in_a_read_session_is_dropped(sqlite_url: str) -> None:
    with read_sessionmaker(sqlite_url)() as session:
        session.execute(text("SELECT v FROM t")).all()
        session.execute(text("INSERT INTO t (v) VALUES ('dropped')"))
        session.rollback()
    with read_sessionmaker(sqlite_url)() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_concurrent_write_sessions_of_one_process_each_commit(sqlite_url: str) -> None:
    """Threads' write transactions queue on the process's gate: each read-modify-write sees
    the one before, none fails."""
    with get_sessionmaker(sqlite_url)() as session:
        session.execute(text("CREATE TABLE counter (n INTEGER)"))
        session.execute(text("INSERT INTO counter VALUES (0)"))
        session.commit()
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            with get_sessionmaker(sqlite_url)() as session:
                n = session.execute(text("SELECT n FROM counter")).scalar_one()
                session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with read_sessionmaker(sqlite_url)() as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 24
    assert errors == []


def test_the_write_gate_opens_however_a_transaction_ends(sqlite_url: str) -> None:
    """Commit, rollback, a session closed mid-write, a read that wrote: after each, another
    thread's write begins at once (a gate left shut would hold it for the busy timeout)."""
    factory = get_sessionmaker(sqlite_url)
    with factory() as session:
        session.execute(text("INSERT INTO t (v) VALUES ('committed')"))
        session.commit()
    with factory() as session:
        session.execute(text("INSERT INTO t (v) VALUES ('rolled back')"))
        session.rollback()
    session = factory()
    session.execute(text("INSERT INTO t (v) VALUES ('closed')"))
    session.close()
    with read_sessionmaker(sqlite_url)() as session:
        session.execute(text("INSERT INTO t (v) VALUES ('upgraded')"))
        session.commit()

    done = threading.Event()

    def write() -> None:
        with factory() as other:
            other.execute(text("INSERT INTO t (v) VALUES ('other thread')"))
            other.commit()
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert done.wait(5), "the write gate was left shut"
    thread.join()
    with read_sessionmaker(sqlite_url)() as session:
        values = set(session.execute(text("SELECT v FROM t")).scalars())
    assert values == {"first", "committed", "upgraded", "other thread"}


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/pool.db", "postgresql://u@127.0.0.1:1/none"])
def test_the_pool_size_comes_from_the_settings(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPRESS_DB_POOL_SIZE", "3")
    get_settings.cache_clear()
    try:
        engine = build_engine(url.format(tmp=tmp_path))  # creating it connects to nothing
    finally:
        get_settings.cache_clear()
    assert engine.pool.size() == 3  # type: ignore[attr-defined]
    # Postgres: as many again under a burst; a SQLite file: as many as the threads ask for.
    overflow = -1 if url.startswith("sqlite") else 3
    assert engine.pool._max_overflow == overflow  # type: ignore[attr-defined]
    engine.dispose()


def test_a_pool_size_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPRESS_DB_POOL_SIZE", "0")
    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="db_pool_size"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_a_closing_session_runs_its_on_close_once(sqlite_url: str) -> None:
    calls: list[int] = []
    session = read_sessionmaker(sqlite_url)()
    session.info["on_close"] = lambda: calls.append(1)
    session.execute(text("SELECT 1"))
    session.close()
    session.close()

    assert calls == [1]
