"""Shared fixtures: real databases migrated by Alembic, settings per test, tiny real networks.

SQLite always runs; Postgres runs where TEST_DATABASE_URL points at one (CI sets it), and the
database-backed tests then run on both. Each test starts from empty tables.

This module imports no model library (torch, onnx, onnxruntime) at import time, so that the
API-side tests collect and run without them (tests/test_conftest_imports.py checks it): the
network fixtures import torch and tests/networks.py inside their bodies.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select, text, update
from support import is_service_setting

from app.core.config import get_settings
from app.core.storage import get_storage
from app.db.base import Base
from app.db.migrate import upgrade_head
from app.db.orm import Artifact, Job, MlModel
from app.db.session import get_engine, session_scope

if TYPE_CHECKING:
    import torch

BACKENDS = ["sqlite", "postgresql"]


def _pg_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def migrated_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One migrated database per backend for the whole run."""
    urls = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"}
    pg = _pg_url()
    if pg:
        engine = get_engine(pg)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        urls["postgresql"] = pg
    for url in urls.values():
        upgrade_head(url)
    return urls


def _truncate(url: str) -> None:
    engine = get_engine(url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, migrated_urls: dict[str, str]) -> Iterator[str]:
    """Each test that touches the database runs on SQLite and, where configured, Postgres."""
    if request.param not in migrated_urls:
        pytest.skip("TEST_DATABASE_URL is not set")
    url = migrated_urls[request.param]
    _truncate(url)
    yield url


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str
) -> Iterator[dict[str, str]]:
    """Settings of one test: its own data directory and a clean database."""
    values = {
        "MODELPRESS_DATA_DIR": str(tmp_path / "data"),
        "MODELPRESS_DATABASE_URL": database_url,
        "MODELPRESS_AUTO_MIGRATE": "false",
        "MODELPRESS_SANDBOX_MEMORY_MB": "6144",
    }
    for key in list(os.environ):
        if is_service_setting(key):
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


# ---------------------------------------------------------------- API objects


@pytest.fixture
def model_id(client: Any, env: dict[str, str], mlp_onnx: Path) -> str:
    """The MLP uploaded through the API, marked `ready` (as its inspection would)."""
    response = client.post("/v1/models", files={"file": ("mlp.onnx", mlp_onnx.read_bytes())})
    model_id = str(response.json()["id"])
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(
            update(MlModel)
            .where(MlModel.id == model_id)
            .values(
                status="ready",
                inputs=[{"name": "input", "dtype": "float32", "shape": ["batch", 32]}],
                outputs=[{"name": "output", "dtype": "float32", "shape": ["batch", 10]}],
            )
        )
    return model_id


@pytest.fixture
def job(client: Any, model_id: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"model_id": model_id, "steps": [{"op": "quantize"}]})
    assert response.status_code == 202, response.text
    return dict(response.json())


@pytest.fixture
def store_artifact(env: dict[str, str], tmp_path: Path) -> Callable[..., str]:
    """Store bytes content-addressed and record them as an artifact of a job, as the worker
    publishes them; returns the sha256."""

    def _store(job_id: str, name: str, data: bytes, media_type: str = "text/plain") -> str:
        sha = hashlib.sha256(data).hexdigest()
        src = tmp_path / f"{sha}.part"
        src.write_bytes(data)
        key = get_storage().put(src, sha)
        with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
            tenant_id = session.scalars(select(Job.tenant_id).where(Job.id == job_id)).one()
            session.add(
                Artifact(
                    job_id=job_id,
                    tenant_id=tenant_id,
                    name=name,
                    kind="report" if name.startswith("report.") else "model",
                    media_type=media_type,
                    size_bytes=len(data),
                    sha256=sha,
                    storage_key=key,
                )
            )
        return sha

    return _store


# ---------------------------------------------------------------- tiny real networks


def _export(
    module: torch.nn.Module, args: tuple, path: Path, names: list[str], dynamic: dict
) -> Path:
    """Export with the dynamo exporter (the TorchScript one bakes attention shapes in): `names`
    name the ONNX inputs, `dynamic` gives the dynamic axes by forward argument name."""
    import torch

    shapes = {
        name: {axis: torch.export.Dim(label, max=4096) for axis, label in axes.items()}
        for name, axes in dynamic.items()
    }
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=names,
        output_names=["output"],
        dynamic_shapes=shapes,
        external_data=False,
        verbose=False,
    )
    return path


@pytest.fixture(scope="session")
def mlp_module() -> torch.nn.Module:
    """A seeded 32 -> 64 -> 10 MLP in eval mode."""
    import torch
    from networks import Mlp

    torch.manual_seed(0)
    return Mlp(32, 64, 10).eval()


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory, mlp_module: torch.nn.Module) -> Path:
    """A 32 -> 64 -> 10 MLP with a dynamic batch axis."""
    import torch

    path = tmp_path_factory.mktemp("models") / "mlp.onnx"
    return _export(mlp_module, (torch.randn(2, 32),), path, ["input"], {"x": {0: "batch"}})


@pytest.fixture(scope="session")
def dead_neuron_mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 32 -> 64 -> 10 MLP of `mlp_onnx` with 16 of its 64 hidden neurons dead on any input
    (weights 0, bias -1 behind the ReLU): what `prune` `method: neuron` must remove."""
    import torch
    from networks import Mlp, kill_neurons

    torch.manual_seed(0)
    module = Mlp(32, 64, 10).eval()
    kill_neurons(module.linear(0), range(0, 64, 4))
    path = tmp_path_factory.mktemp("models") / "dead-mlp.onnx"
    return _export(module, (torch.randn(2, 32),), path, ["input"], {"x": {0: "batch"}})


@pytest.fixture(scope="session")
def cnn_module() -> torch.nn.Module:
    """The CNN (networks.Cnn), seeded, with non-trivial batch-norm statistics, in eval mode."""
    import torch
    from networks import Cnn, running_statistics

    torch.manual_seed(0)
    return running_statistics(Cnn()).eval()


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory: pytest.TempPathFactory, cnn_module: torch.nn.Module) -> Path:
    """The CNN exported to ONNX with a dynamic batch axis."""
    import torch

    path = tmp_path_factory.mktemp("models") / "cnn.onnx"
    return _export(cnn_module, (torch.randn(2, 3, 16, 16),), path, ["x"], {"x": {0: "batch"}})


@pytest.fixture(scope="session")
def unfolded_cnn_onnx(
    tmp_path_factory: pytest.TempPathFactory, cnn_module: torch.nn.Module
) -> Path:
    """The CNN exported by the TorchScript exporter without constant folding: BatchNormalization
    and a Constant stay in the graph, what ONNX Runtime's basic optimizations fold away."""
    import torch

    path = tmp_path_factory.mktemp("models") / "cnn-unfolded.onnx"
    torch.onnx.export(
        cnn_module,
        (torch.randn(2, 3, 16, 16),),
        str(path),
        dynamo=False,
        do_constant_folding=False,
        input_names=["x"],
        output_names=["output"],
        dynamic_axes={"x": {0: "batch"}},
    )
    return path


@pytest.fixture(scope="session")
def transformer_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer transformer encoder over token ids (vocabulary 1000), dynamic batch and length."""
    import torch
    from networks import Encoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "encoder.onnx"
    ids = torch.randint(0, 1000, (2, 12))
    module = Encoder(vocab=1000, dim=64, ffn=128).eval()  # drawn after the ids, as always
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}}
    return _export(module, (ids,), path, ["input_ids"], dynamic)
