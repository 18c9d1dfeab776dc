"""`modelpress`: run the service (run, api, worker, scheduler, migrate, admin) from one command."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.core.config import Settings


def _settings() -> Settings:
    from app.core.config import get_settings

    return get_settings()


def cmd_migrate(_args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade_head

    upgrade_head(_settings().resolved_database_url)
    print("database at head")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    port = args.port or int(os.environ.get("PORT", "8000"))
    uvicorn.run("app.main:create_app", factory=True, host=args.host, port=port, log_config=None)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.embedded or settings.embedded_queue:
        from worker.embedded import run_embedded_worker

        if args.parent_pid:
            import signal

            from worker.sandbox.limits import die_with_parent

            die_with_parent(args.parent_pid, signal.SIGTERM)
        run_embedded_worker(settings)
        return 0
    from app.core.queue import job_queue
    from worker.celery_app import celery_app

    argv = ["worker", "-Q", job_queue(args.device), "-O", "fair", "--loglevel", "INFO"]
    argv += ["--concurrency", str(args.concurrency)]
    celery_app.worker_main(argv)
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from app.core.logging import configure_logging
    from worker.reaper import tick

    configure_logging()
    settings = _settings()
    while True:
        tick(settings)
        if args.once:
            return 0
        time.sleep(args.interval)


def cmd_run(args: argparse.Namespace) -> int:
    """Embedded mode: migrate, start one local worker process, serve the API in the foreground."""
    from app.db.migrate import upgrade_head

    settings = _settings()
    upgrade_head(settings.resolved_database_url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--embedded", "--parent-pid", str(os.getpid())]
    )
    port = args.port or int(os.environ.get("PORT", "8000"))
    print(f"ModelPress on http://{args.host}:{port}/docs (data in {settings.data_dir})", flush=True)
    try:
        _serve(args.host, port)
    finally:
        worker.terminate()  # the worker requeues an interrupted job before it exits
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


def _serve(host: str, port: int) -> None:
    """uvicorn in the foreground; SIGINT/SIGTERM end it gracefully and return (exit status 0)."""
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
        "app.main:create_app", factory=True, host=host, port=port, log_config=None
    )
    Server(config).run()


def cmd_create_key(args: argparse.Namespace) -> int:
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
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("scheduler", help="housekeeping: reaper and re-dispatch")
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
    from app.client_cli import add_client_commands

    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        from app.client_cli import EXIT_ERROR

        if type(exc).__name__ in ("ApiError", "ConnectError", "TimeoutError", "HTTPStatusError"):
            print(f"modelpress: {exc}", file=sys.stderr)
            return EXIT_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
