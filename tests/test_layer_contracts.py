"""The import-linter contracts in pyproject.toml hold, and they bite: a model-library import added
under app/ (in a temporary copy of the tree) makes `lint-imports` fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> Path:
    for name in ("app", "worker", "migrations"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_tree(tmp_path_factory.mktemp("tree"))


def test_the_contracts_hold_on_this_tree(tree: Path) -> None:
    done = _lint(tree)

    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("app/jobs/service.py", "import torch", "never imports a model library"),
        ("app/passes/quantize.py", "import onnxruntime", "never imports a model library"),
        ("app/http/deps.py", "from worker.pipeline import job", "app never imports worker"),
        ("app/client/__init__.py", "from app.db import session", "client imports nothing"),
        ("worker/execute.py", "import onnx", "supervisor side"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = _copy_tree(tmp_path)
    with (tree / module).open("a") as fh:
        fh.write(f"\n{line}  # noqa\n")

    done = _lint(tree)

    assert done.returncode != 0
    broken = done.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, done.stdout[-3000:]
