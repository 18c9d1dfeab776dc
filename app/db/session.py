"""Engines and sessions: one engine per URL, SQLite tuned for several processes on one file.

SQLite allows one writer at a time. Write transactions begin `IMMEDIATE` (they take the write
lock up front, waiting up to the busy timeout), so that a transaction that read first never has
to upgrade its lock under contention. Read transactions (`read_sessionmaker`, every GET request)
begin deferred: in WAL mode a reader takes no lock a writer waits on and waits on none, so reads
neither queue behind each other nor behind the worker. A read transaction that writes after all
is not refused: before its first write statement it ends the read (nothing to lose) and begins
`IMMEDIATE`, so the write still runs under the write lock, in a transaction of its own.

Within one process, write transactions also queue on a lock of the engine's before they ask
SQLite: SQLite's busy handler polls with growing sleeps, so under a burst (hundreds of
`POST /v1/jobs` at once) waiters would miss the moments the lock is free and time out; the
process lock hands it over at once. Other processes (the worker) still meet at SQLite's lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import get_settings

log = logging.getLogger(__name__)

# The execution option that makes a SQLite transaction begin deferred (a read transaction).
READ_OPTION = "modelpress_read"
_TX_KEY = "modelpress_tx"  # in the pooled connection's info: "read" or "write" while one is open
BUSY_TIMEOUT_S = 15
# Statements that write, or open a savepoint a write may follow (the switch to a write
# transaction must come before the savepoint, which ending the read would release).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "SAVEPOINT")


def _is_write(statement: str) -> bool:
    return statement.lstrip()[:9].upper().startswith(_WRITES)


class _WriteGate:
    """One process's write transactions on one SQLite file, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def acquire(self) -> bool:
        """Wait for the gate (at most the busy timeout: then SQLite's lock decides alone, as
        it would without the gate); False without waiting where this thread holds it already
        (a second session's write would wait on SQLite's lock held by the first, as before)."""
        if self._owner == threading.get_ident():
            return False
        if not self._lock.acquire(timeout=BUSY_TIMEOUT_S):
            return False
        self._owner = threading.get_ident()
        return True

    def release(self) -> None:
        self._owner = None
        self._lock.release()


def _raw(connection: Any) -> Any:
    """The sqlite3 connection behind a pool's proxy (or the connection itself)."""
    return getattr(connection, "dbapi_connection", connection)


def _tune_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, IMMEDIATE write and deferred read transactions: the API, worker and
    CLI share one file."""
    gate = _WriteGate()
    holder: list[int] = []  # id() of the sqlite3 connection whose transaction holds the gate

    def begin_write(dbapi_conn: Any, execute: Any) -> None:
        if gate.acquire():
            holder[:] = [id(dbapi_conn)]
        try:
            execute("BEGIN IMMEDIATE")
        except BaseException:
            release(dbapi_conn)
            raise

    def release(dbapi_conn: Any) -> None:
        if holder == [id(_raw(dbapi_conn))]:
            holder.clear()
            gate.release()

    # The gate opens once the transaction has ended in SQLite (the engine's commit and rollback
    # events come before it): the dialect's own commit and rollback, which the pool's reset of a
    # returned connection calls too.
    dialect: Any = engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    def _commit(dbapi_conn: Any) -> None:
        try:
            do_commit(dbapi_conn)
        finally:
            release(dbapi_conn)

    def _rollback(dbapi_conn: Any) -> None:
        try:
            do_rollback(dbapi_conn)
        finally:
            release(dbapi_conn)

    dialect.do_commit, dialect.do_rollback = _commit, _rollback

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let the begin hook below issue BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "close")
    @event.listens_for(engine, "invalidate")
    def _on_gone(dbapi_conn: Any, _record: Any, *_exc: Any) -> None:
        release(dbapi_conn)  # a connection closed mid-transaction: its transaction is gone

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_OPTION):
            conn.info[_TX_KEY] = "read"
            conn.exec_driver_sql("BEGIN")
            return
        # A deferred transaction that read first cannot upgrade to a write under contention
        # (SQLITE_BUSY at once, busy_timeout does not help); taking the write lock up front can.
        conn.info[_TX_KEY] = "write"
        begin_write(_raw(conn.connection), conn.exec_driver_sql)

    @event.listens_for(engine, "before_cursor_execute")
    def _before_execute(
        conn: Any, cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        if conn.info.get(_TX_KEY) != "read" or not _is_write(statement):
            return
        # A write in a read transaction: upgrading its lock could fail with SQLITE_BUSY(_SNAPSHOT)
        # while the worker writes. End the read and take the write lock the way writes do.
        conn.info[_TX_KEY] = "write"
        dbapi_conn = cursor.connection
        if dbapi_conn.in_transaction:
            dbapi_conn.execute("COMMIT")
        begin_write(dbapi_conn, dbapi_conn.execute)
        log.debug("sqlite: a read transaction writes; it continues as a write transaction")

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(conn: Any) -> None:
        conn.info.pop(_TX_KEY, None)


def build_engine(url: str, pool_size: int | None = None) -> Engine:
    """An engine for `url`, with the SQLite pragmas or a pre-pinging Postgres pool.

    `pool_size` (default: MODELPRESS_DB_POOL_SIZE) connections are kept open per process; under
    a burst as many again may open on Postgres, and as many as the threads ask for on SQLite.
    """
    size = pool_size if pool_size is not None else get_settings().db_pool_size
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # A file's connections cost no server: no cap beyond `size` kept open, so that a
            # thread never waits for a connection while others wait for the write lock.
            pool: dict[str, Any] = {"pool_size": size, "max_overflow": -1}
        else:
            pool = {}
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}, **pool
        )
        _tune_sqlite(engine)
        return engine
    if parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    return create_engine(url, pool_pre_ping=True, pool_size=size, max_overflow=size)


def get_engine(url: str | None = None) -> Engine:
    """The cached engine of `url` (default: the database configured now)."""
    return _engine_for(url or get_settings().resolved_database_url)


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    return build_engine(url)


@lru_cache(maxsize=8)
def _sessionmakers(url: str) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    engine = _engine_for(url)
    read = engine.execution_options(**{READ_OPTION: True})  # same pool, deferred BEGIN
    return (
        sessionmaker(bind=engine, expire_on_commit=False),
        sessionmaker(bind=read, expire_on_commit=False, class_=ClosingSession),
    )


class ClosingSession(Session):
    """A session that runs `info["on_close"]` (once) when it is closed: the API's request
    sessions hand back their admission slot then (app/http/deps.py)."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            on_close = self.info.pop("on_close", None)
            if on_close is not None:
                on_close()


class RequestSession(ClosingSession):
    """A request's session that may write: its transactions take the write lock (SQLite) until
    its first commit, and only read after it (their first write switches them back, as in a
    read session). A route commits what it wrote, then reads what it answers (the job it
    queued): that read must not hold the lock while the response is sent, nor wait for it."""

    def commit(self) -> None:
        super().commit()
        read_bind = self.info.get(READ_OPTION)
        if read_bind is not None:
            self.bind = read_bind


def request_session(url: str | None = None) -> Session:
    """A `RequestSession` on the cached engine."""
    url = url or get_settings().resolved_database_url
    read = _sessionmakers(url)[1].kw["bind"]
    return RequestSession(bind=_engine_for(url), expire_on_commit=False, info={READ_OPTION: read})


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """A session factory bound to the cached engine: its transactions may write (on SQLite they
    take the write lock as they begin)."""
    return _sessionmakers(url or get_settings().resolved_database_url)[0]


def read_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """A session factory for transactions that read (on SQLite they begin deferred and lock
    nothing; a write in one still works, in a write transaction of its own)."""
    return _sessionmakers(url or get_settings().resolved_database_url)[1]


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(url: str | None = None) -> None:
    """One `SELECT 1` on a pooled connection of the cached engine; raises when the database is
    down (Postgres' pre-ping replaces a connection the server closed)."""
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))
