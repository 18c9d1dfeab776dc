"""Blob lifetimes across kinds: models, datasets and artifacts share content-addressed bytes, and
only app/blobs decides when those bytes go. Real databases (SQLite and Postgres), real files."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import update
from support import assert_problem

from app.blobs import repository, service
from app.core.config import get_settings
from app.core.storage import blob_key, get_storage
from app.db.base import Base
from app.db.orm import Job, MlModel
from app.db.session import session_scope


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Release blobs at once (the default grace period protects uploads in flight)."""
    monkeypatch.setenv("MODELPRESS_BLOB_GRACE_SECONDS", "0")
    get_settings.cache_clear()


def _blob_path(sha256: str) -> Path:
    return get_storage().root / blob_key(sha256)


def _upload(client: Any, data: bytes, name: str = "m.onnx") -> dict[str, Any]:
    response = client.post("/v1/models", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


# ---------------------------------------------------------------- the shared-bytes workflow


def test_deleting_a_model_uploaded_from_an_artifact_keeps_the_artifact(
    client: Any,
    job: dict[str, Any],
    mlp_onnx: Path,
    store_artifact: Callable[..., str],
    no_grace: None,
) -> None:
    """The bug of the trust issue: a job's artifact re-uploaded as a model, then that model
    deleted, used to unlink the artifact's bytes (downloads answered 500 from then on)."""
    artifact = mlp_onnx.read_bytes() + b""  # the artifact is a real ONNX model
    sha = store_artifact(job["id"], "model.onnx", artifact, "application/octet-stream")
    again = _upload(client, artifact, "from-artifact.onnx")
    assert again["sha256"] == sha

    assert client.delete(f"/v1/models/{again['id']}").status_code == 204

    response = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx")
    assert response.status_code == 200, response.text
    assert response.content == artifact
    assert _blob_path(sha).is_file()


def test_two_models_with_the_same_bytes_each_keep_them(
    client: Any, mlp_onnx: Path, no_grace: None
) -> None:
    data = mlp_onnx.read_bytes()
    first, second = _upload(client, data, "a.onnx"), _upload(client, data, "b.onnx")

    assert client.delete(f"/v1/models/{first['id']}").status_code == 204
    assert _blob_path(second["sha256"]).is_file()
    assert client.get(f"/v1/models/{second['id']}/file").status_code == 200

    assert client.delete(f"/v1/models/{second['id']}").status_code == 204
    assert not _blob_path(second["sha256"]).exists()


def test_a_dataset_and_a_model_with_the_same_bytes_keep_each_other(
    client: Any, no_grace: None
) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((4, 32), dtype=np.float32))
    data = buffer.getvalue()
    dataset = client.post("/v1/datasets", files={"file": ("d.npz", data)})
    assert dataset.status_code == 201, dataset.text
    sha = dataset.json()["sha256"]
    with session_scope() as session:  # a model row sharing the bytes, as a re-upload would make
        model = MlModel(
            tenant_id=_tenant_of_dataset(session, dataset.json()["id"]),
            name="shares.onnx",
            format="onnx",
            size_bytes=len(data),
            sha256=sha,
            storage_key=blob_key(sha),
            status="ready",
        )
        session.add(model)

    assert client.delete(f"/v1/datasets/{dataset.json()['id']}").status_code == 204
    assert _blob_path(sha).is_file()


def _tenant_of_dataset(session: Any, dataset_id: str) -> str:
    from app.db.orm import Dataset

    row = session.get(Dataset, dataset_id)
    assert row is not None
    return str(row.tenant_id)


# ---------------------------------------------------------------- release after commit


def test_the_last_reference_releases_the_bytes_after_commit(
    client: Any, mlp_onnx: Path, no_grace: None
) -> None:
    model = _upload(client, mlp_onnx.read_bytes())

    assert client.delete(f"/v1/models/{model['id']}").status_code == 204

    assert not _blob_path(model["sha256"]).exists()


def test_a_rollback_keeps_the_bytes(client: Any, mlp_onnx: Path, no_grace: None) -> None:
    model = _upload(client, mlp_onnx.read_bytes())
    storage = get_storage()

    with pytest.raises(RuntimeError), session_scope() as session:
        row = session.get(MlModel, model["id"])
        session.delete(row)
        session.flush()
        service.release_after_commit(session, storage, blob_key(model["sha256"]), 0)
        raise RuntimeError("the request failed after the delete")

    assert _blob_path(model["sha256"]).is_file()
    assert client.get(f"/v1/models/{model['id']}").status_code == 200


def test_young_bytes_wait_for_the_collector(client: Any, mlp_onnx: Path) -> None:
    """Inside the grace period an upload of the same bytes may be about to commit a row."""
    model = _upload(client, mlp_onnx.read_bytes())
    path = _blob_path(model["sha256"])

    assert client.delete(f"/v1/models/{model['id']}").status_code == 204
    assert path.is_file()

    settings = get_settings()
    with session_scope() as session:
        assert service.collect_garbage(session, get_storage(), settings).blobs == []
    _age(path, settings.blob_grace_seconds + 1)
    with session_scope() as session:
        collected = service.collect_garbage(session, get_storage(), settings)
    assert collected.blobs == [blob_key(model["sha256"])]
    assert not path.exists()


def test_storing_known_bytes_again_restarts_their_grace(
    env: dict[str, str], tmp_path: Path
) -> None:
    storage = get_storage()
    data = b"the same bytes twice"
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "a").write_bytes(data)
    key = storage.put(tmp_path / "a", sha)
    _age(storage.path_of(key), 3600)
    (tmp_path / "b").write_bytes(data)

    assert storage.put(tmp_path / "b", sha) == key

    age = storage.age_seconds(key)
    assert age is not None and age < 60
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- the collector


def test_the_collector_removes_orphans_and_spares_what_is_live(
    job: dict[str, Any], mlp_onnx: Path, tmp_path: Path
) -> None:
    storage, settings = get_storage(), get_settings()
    orphan = b"stored by a publish that lost its compare-and-set"
    sha = hashlib.sha256(orphan).hexdigest()
    (tmp_path / "o").write_bytes(orphan)
    _age(storage.root / storage.put(tmp_path / "o", sha), settings.blob_grace_seconds + 1)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(status="running", attempt=1))
    live = storage.new_scratch(f"job-{job['id']}-a1")
    killed = storage.new_scratch(f"job-{job['id']}-a0")
    upload = storage.new_scratch("upload")
    (upload / "part").write_bytes(b"still streaming")
    for path in (live, killed):
        _age(path, settings.blob_grace_seconds + 1)

    with session_scope() as session:
        collected = service.collect_garbage(session, storage, settings)

    assert collected.blobs == [blob_key(sha)]
    assert collected.scratch == [killed.name]
    assert live.is_dir() and upload.is_dir() and not killed.exists()
    assert _blob_path(hashlib.sha256(mlp_onnx.read_bytes()).hexdigest()).is_file()


def test_every_table_that_points_at_blobs_is_counted() -> None:
    """A new kind of row with a storage key must be known to the collector, or its bytes go."""
    with_keys = {
        mapper.class_
        for mapper in Base.registry.mappers
        if "storage_key" in sa_inspect(mapper.class_).columns
    }

    assert with_keys == set(repository.REFERRING)


# ---------------------------------------------------------------- integrity


def test_a_tampered_artifact_is_never_served(
    client: Any, job: dict[str, Any], store_artifact: Callable[..., str]
) -> None:
    sha = store_artifact(job["id"], "model.onnx", b"the stored bytes", "application/octet-stream")
    _blob_path(sha).write_bytes(b"the tampered bytes")

    response = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx")

    assert_problem(response, 500, "artifact_corrupt")
    assert b"tampered" not in response.content
    assert get_storage().is_quarantined(blob_key(sha))
    assert_problem(
        client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx"), 500, "artifact_corrupt"
    )


def test_a_large_blob_with_the_wrong_size_is_caught_without_hashing(
    client: Any,
    job: dict[str, Any],
    store_artifact: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELPRESS_VERIFY_DOWNLOAD_MAX_BYTES", "4")
    get_settings.cache_clear()
    sha = store_artifact(job["id"], "model.onnx", b"twelve bytes", "application/octet-stream")
    with _blob_path(sha).open("ab") as fh:
        fh.write(b"!")

    assert_problem(
        client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx"), 500, "artifact_corrupt"
    )


def test_the_scrub_quarantines_what_no_longer_matches(
    job: dict[str, Any], store_artifact: Callable[..., str]
) -> None:
    good = store_artifact(job["id"], "report.json", b"{}", "application/json")
    bad = store_artifact(job["id"], "model.onnx", b"bytes", "application/octet-stream")
    _blob_path(bad).write_bytes(b"rot")

    assert service.scrub(get_storage()) == [blob_key(bad)]
    assert _blob_path(good).is_file() and not _blob_path(bad).exists()


def test_a_rejected_models_bytes_do_not_stay(
    client: Any, unknown_op_onnx: bytes, no_grace: None
) -> None:
    """An upload that passes the cheap checks and fails its sandboxed inspection keeps its row
    and error, not its bytes."""
    from worker.execute import execute_inspection

    model = _upload(client, unknown_op_onnx)

    assert execute_inspection(model["id"], get_settings()) == "rejected"

    assert client.get(f"/v1/models/{model['id']}").json()["status"] == "rejected"
    assert not _blob_path(model["sha256"]).exists()
    assert not get_storage().is_quarantined(blob_key(model["sha256"]))
    assert_problem(client.get(f"/v1/models/{model['id']}/file"), 409, "model_rejected")


def test_bytes_that_rot_before_inspection_reject_the_model(
    client: Any, mlp_onnx: Path, no_grace: None
) -> None:
    from worker.execute import execute_inspection

    model = _upload(client, mlp_onnx.read_bytes())
    _blob_path(model["sha256"]).write_bytes(b"rot")

    assert execute_inspection(model["id"], get_settings()) == "rejected"

    body = client.get(f"/v1/models/{model['id']}").json()
    assert body["status"] == "rejected" and body["error"]["code"] == "artifact_corrupt"
    assert get_storage().is_quarantined(blob_key(model["sha256"]))


@pytest.fixture
def unknown_op_onnx() -> bytes:
    """A well-formed ONNX file whose one node no runtime knows: refused only by inspection."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.unknown")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.unknown", 1)],
    )
    return bytes(model.SerializeToString())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can own files of another uid")
def test_a_blob_written_by_a_jailed_child_becomes_the_stores(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A job's artifact is written by its child's own uid; stored, it is the store's, 0644."""
    data = b"an artifact from the jail"
    src = tmp_path / "artifact"
    src.write_bytes(data)
    os.chown(src, 230000, 230000)
    os.chmod(src, 0o666)

    key = get_storage().put(src, hashlib.sha256(data).hexdigest())

    stat = get_storage().path_of(key).stat()
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (0, 0, 0o644)
