"""The client installs without the server: importing it loads httpx, pydantic (and what httpx
itself loads, rich among it) and the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a bare `pip install modelpress` lacks (and the worker code the client must never reach).
# pydantic is the client's own (its typed results); pydantic_settings is the server's.
SERVER_STACK = [
    "alembic",
    "celery",
    "fastapi",
    "numpy",
    "onnx",
    "onnxruntime",
    "pydantic_settings",
    "sqlalchemy",
    "starlette",
    "torch",
    "worker",
]


def _loaded(code: str) -> list[str]:
    """The sorted names `code` prints, run in a fresh interpreter on the source tree."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return sorted(done.stdout.split())


def test_the_client_needs_no_server_stack() -> None:
    code = (
        "import sys, app.cli, app.client, app.client.api, app.client.cli; app.cli.build_parser(); "
        "heavy = {'fastapi', 'sqlalchemy', 'torch', 'onnx', 'onnxruntime', 'celery'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert done.stdout.strip() == "[]"


def test_the_bare_client_import_loads_no_server_module() -> None:
    code = (
        "import sys, app.client; "
        f"stack = {SERVER_STACK!r}; "
        "print(*sorted(m for m in sys.modules if m.split('.')[0] in stack "
        "or (m.startswith('app.') and not m.startswith('app.client'))))"
    )

    assert _loaded(code) == []


def test_the_modelpress_command_loads_no_worker_code_until_a_worker_command_runs() -> None:
    code = (
        "import sys, app.cli; app.cli.build_parser().parse_args(['jobs', 'list']); "
        "print(*sorted(m for m in sys.modules if m == 'worker' or m.startswith('worker.') "
        "or m == 'app.worker_seam'))"
    )

    assert _loaded(code) == []
