"""MF-04/MF-19: hostile PyTorch programs that get past the API's pre-scan (here: inserted
directly) still run no code in the sandbox: torch's restricted loaders refuse them."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from networks import TinyLinear

from app.core.auth import default_tenant_id
from app.core.config import get_settings
from app.core.storage import get_storage
from app.db.orm import MlModel
from app.db.session import session_scope
from worker.execute import execute_inspection


class _Payload:
    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.canary}",))


def _replace_member(archive: Path, suffix: str, data: bytes) -> None:
    with zipfile.ZipFile(archive) as src:
        members = [(i, src.read(i)) for i in src.infolist()]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as dst:
        for info, body in members:
            dst.writestr(info, data if info.filename.endswith(suffix) else body)


def _insert_validating(path: Path, fmt: str, shapes: object = None) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    copy = path.with_suffix(".copy")
    copy.write_bytes(path.read_bytes())
    key = get_storage(get_settings()).put(copy, digest)
    with session_scope() as session:
        model = MlModel(
            tenant_id=default_tenant_id(session),
            name=path.name,
            format=fmt,
            size_bytes=path.stat().st_size,
            sha256=digest,
            storage_key=key,
            status="validating",
            input_shapes=shapes,
        )
        session.add(model)
        session.flush()
        return model.id


def _status(model_id: str) -> tuple[str, dict | None]:
    with session_scope() as session:
        model = session.get(MlModel, model_id)
        assert model is not None
        return model.status, model.error


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def test_pt2_with_a_code_running_pickle_is_rejected_without_running_it(
    env: dict[str, str], tmp_path: Path, canary: Path
) -> None:
    path = tmp_path / "evil.pt2"
    program = torch.export.export(TinyLinear().eval(), (torch.randn(2, 4),))
    torch.export.save(program, path)
    buffer = io.BytesIO()
    torch.save(_Payload(canary), buffer)
    _replace_member(path, "data/sample_inputs/model.pt", buffer.getvalue())
    model_id = _insert_validating(path, "pt2")

    execute_inspection(model_id, get_settings())

    status, error = _status(model_id)
    assert status == "rejected"
    assert error is not None and error["code"] == "model_rejected"
    assert "weights" in error["detail"].lower() or "unpickl" in error["detail"].lower(), error
    assert not canary.exists()


def test_torchscript_with_a_code_running_pickle_is_rejected_without_running_it(
    env: dict[str, str], tmp_path: Path, canary: Path
) -> None:
    path = tmp_path / "evil.pt"
    torch.jit.save(torch.jit.script(TinyLinear().eval()), path)
    _replace_member(path, "/data.pkl", pickle.dumps(_Payload(canary), protocol=2))
    model_id = _insert_validating(path, "torchscript", [[1, 4]])

    execute_inspection(model_id, get_settings())

    status, error = _status(model_id)
    assert status == "rejected"
    assert error is not None and error["code"] in ("model_rejected", "loader_crashed")
    assert not canary.exists()
