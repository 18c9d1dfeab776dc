"""`modelpress`: run the service (run, api, worker, scheduler, migrate, admin) from one command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.client import CLIENT_ERRORS, EXIT_ERROR, add_client_commands
from app.run_supervisor import EmbeddedWorker
from app.tenants.commands import add_key_commands

if TYPE_CHECKING:
    from app.core.config import Settings

# prometheus-client's multiprocess directory (app/core/metrics.py; not imported here: the
# variable must be set before prometheus-client is first imported by an API process).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How long an idle keep-alive connection stays open. Longer than the clients' own pool expiry
# (httpx and requests: 5 s, uvicorn's default too), so that a client never sends a request on
# a connection the server is closing at that moment (a ReadError under load; a load balancer's
# idle timeout should be longer still).
KEEP_ALIVE_SECONDS = 75


def _settings() -> Settings:
    """The server settings, imported late so that the client commands never load them; a bad
    setting (e.g. an unsupported MODELPRESS_STORAGE_URL) exits 3 with one line saying why."""
    from app.core.startup import StartupRefused, load_settings

    try:
        return load_settings()
    except StartupRefused as exc:
        print(f"modelpress: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None


def cmd_migrate(_args: argparse.Namespace) -> int:
    """Upgrade the database to the head revision."""
    from app.db.migrate import upgrade_head

    upgrade_head(_settings().resolved_database_url)
    print("database at head")
    return 0


# No docstring on purpose: build_parser shows it as the `api` help, which has always been empty.
def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    if not _safe_to_bind(args.host):
        return EXIT_ERROR
    port = args.port or int(os.environ.get("PORT", "8000"))
    workers = _api_workers(_settings(), "api")
    if workers > 1:
        _serve_processes(args.host, port, workers, migrate=True)
        return 0
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=port,
        log_config=None,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    return 0


def _api_workers(settings: Settings, command: str) -> int:
    """MODELPRESS_API_WORKERS, or the command's default: `run` 1; `api` 2 where a broker is set
    (the rate limiter is then shared through Redis, not counted per process), else 1. Two, not
    the CPU count: a container sees the host's CPUs, and each process has its own database
    pool; scale further with replicas or the setting."""
    if settings.api_workers:
        return settings.api_workers
    return 2 if command == "api" and not settings.embedded_queue else 1


def _serve_processes(host: str, port: int, workers: int, *, migrate: bool) -> None:
    """uvicorn with `workers` processes on one socket until SIGINT/SIGTERM. The database is
    migrated once, here, not by each process; `/metrics` uses prometheus-client's multiprocess
    mode, in PROMETHEUS_MULTIPROC_DIR (a fresh directory unless the operator set one), which
    must be in the environment before the processes start and import prometheus-client."""
    import shutil
    import tempfile

    import uvicorn

    settings = _settings()
    if migrate and settings.auto_migrate:
        from app.db.migrate import upgrade_head

        upgrade_head(settings.resolved_database_url)
    os.environ["MODELPRESS_AUTO_MIGRATE"] = "false"  # for the processes: done above
    fresh = None
    if not os.environ.get(MULTIPROC_ENV):
        fresh = tempfile.mkdtemp(prefix="modelpress-metrics-")
        os.environ[MULTIPROC_ENV] = fresh
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
    finally:
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)


def cmd_worker(args: argparse.Namespace) -> int:
    """The embedded worker (no broker) or a Celery worker on the device's queue."""
    settings = _settings()  # first: importing the worker reads the settings
    from app import worker_seam
    from app.core.queue import job_queue

    if args.embedded or settings.embedded_queue:
        worker_seam.run_embedded(settings, args.parent_pid, args.replaces)
    else:
        worker_seam.run_celery_worker(job_queue(args.device), args.concurrency)
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    """Housekeeping until stopped (or one tick with `--once`)."""
    settings = _settings()  # first: importing the worker reads the settings
    from app import worker_seam
    from app.core.logging import configure_logging

    configure_logging()
    worker_seam.run_scheduler(settings, args.interval, args.once)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Embedded mode: migrate, start one local worker process, serve the API in the foreground."""
    from app.db.migrate import upgrade_head

    settings = _settings()
    if not _safe_to_bind(args.host):
        return EXIT_ERROR
    upgrade_head(settings.resolved_database_url)
    worker = EmbeddedWorker()  # restarted within seconds if it dies (app/run_supervisor.py)
    worker.start()
    port = args.port or int(os.environ.get("PORT", "8000"))
    print(f"ModelPress on http://{args.host}:{port}/docs (data in {settings.data_dir})", flush=True)
    try:
        _serve(args.host, port, _api_workers(settings, "run"))
    finally:
        worker.stop()
    return 0


def _safe_to_bind(host: str) -> bool:
    """False (after saying why on stderr) when serving `host` would expose the service."""
    from app.core.startup import StartupRefused, check_bind

    try:
        check_bind(_settings(), host)
    except StartupRefused as exc:
        print(f"modelpress: {exc}", file=sys.stderr)
        return False
    return True


def _serve(host: str, port: int, workers: int = 1) -> None:
    """uvicorn in the foreground; SIGINT/SIGTERM end it gracefully and return (exit status 0)."""
    if workers > 1:
        _serve_processes(host, port, workers, migrate=False)  # `run` has migrated
        return
    import contextlib
    import signal
    from collections.abc import Iterator

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the signal after shutdown, which would skip stopping the worker.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_config=None,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    Server(config).run()


def cmd_create_key(args: argparse.Namespace) -> int:
    """Print a new API key for a tenant (created if missing) as the last line."""
    from app.core.auth import create_key
    from app.db.migrate import upgrade_head
    from app.db.session import session_scope

    settings = _settings()
    upgrade_head(settings.resolved_database_url)
    with session_scope() as session:
        key = create_key(session, args.tenant, settings)
    print(f"API key for tenant {args.tenant!r} (shown once; only its hash is stored):")
    print(key)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelpress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, host in (("run", cmd_run, "127.0.0.1"), ("api", cmd_api, "0.0.0.0")):  # noqa: S104
        p = sub.add_parser(name, help=func.__doc__)
        p.add_argument("--host", default=host)
        p.add_argument("--port", type=int, default=None, help="default: $PORT or 8000")
        p.set_defaults(func=func)
    p = sub.add_parser("worker", help="Celery worker (with a broker) or the embedded worker")
    p.add_argument("--embedded", action="store_true", help="poll the database, no broker")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="the queue to serve")
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--replaces", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser(
        "scheduler", help="housekeeping: reaper, re-dispatch, blob collection, scrub"
    )
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--once", action="store_true")
    p.set_defaults(func=cmd_scheduler)
    sub.add_parser("migrate", help="alembic upgrade head").set_defaults(func=cmd_migrate)
    admin = sub.add_parser("admin", help="administration").add_subparsers(
        dest="admin", required=True
    )
    p = admin.add_parser("create-key", help="print a new API key for a tenant")
    p.add_argument("--tenant", required=True)
    p.set_defaults(func=cmd_create_key)
    add_key_commands(admin)
    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a client error prints one line and exits 3 instead of a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CLIENT_ERRORS as exc:
        print(f"modelpress: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
