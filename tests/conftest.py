"""Shared fixtures: real databases migrated by Alembic, settings per test, tiny real networks.

SQLite always runs; Postgres runs where TEST_DATABASE_URL points at one (CI sets it), and the
database-backed tests then run on both. Each test starts from empty tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import text

from app.core.config import get_settings
from app.db.base import Base
from app.db.migrate import upgrade_head
from app.db.session import get_engine

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
        if key.startswith("MODELPRESS_"):
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


# ---------------------------------------------------------------- tiny real networks


def _export(module: object, args: tuple, path: Path, names: list[str], dynamic: dict) -> Path:
    """Export with the dynamo exporter (the TorchScript one bakes attention shapes in)."""
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
def mlp_module() -> object:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    ).eval()


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory, mlp_module: object) -> Path:
    """A 32 -> 64 -> 10 MLP with a dynamic batch axis."""
    import torch

    path = tmp_path_factory.mktemp("models") / "mlp.onnx"
    return _export(mlp_module, (torch.randn(2, 32),), path, ["input"], {"input": {0: "batch"}})


class Cnn(torch.nn.Module):
    """A small CNN with batch-norm and a residual block, 3x16x16 inputs, 5 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.block = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(y + self.block(y))
        return self.head(y.mean((2, 3)))


@pytest.fixture(scope="session")
def cnn_module() -> torch.nn.Module:
    """The CNN, seeded, with non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    model = Cnn()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory: pytest.TempPathFactory, cnn_module: torch.nn.Module) -> Path:
    """The CNN exported to ONNX with a dynamic batch axis."""
    path = tmp_path_factory.mktemp("models") / "cnn.onnx"
    return _export(cnn_module, (torch.randn(2, 3, 16, 16),), path, ["x"], {"x": {0: "batch"}})


@pytest.fixture(scope="session")
def transformer_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer transformer encoder over token ids (vocabulary 1000), dynamic batch and length."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(1000, 64)
            layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
            self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = torch.nn.Linear(64, 4)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(self.embed(input_ids)).mean(1))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "encoder.onnx"
    ids = torch.randint(0, 1000, (2, 12))
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}}
    return _export(Encoder().eval(), (ids,), path, ["input_ids"], dynamic)
