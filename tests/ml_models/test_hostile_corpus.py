"""The hostile corpus (tests/ml_models/hostile_corpus.py) against `POST /v1/models`.

Every class is refused at upload by the torch-free pre-scan with a 4xx problem+json and its
code, within a liveness bound, leaving no scratch file, blob or row, and no canary (no payload
ran). While four of the most expensive uploads are being checked at once, `GET /healthz` still
answers. The bounds are generous liveness checks, not performance assertions (the measured
times are in BENCHMARKS.md, from scripts/benchlib/hostile.py).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

REFUSAL_BOUND_S = 30.0
HEALTH_BOUND_S = 5.0


def _load_corpus() -> Any:
    path = Path(__file__).with_name("hostile_corpus.py")
    spec = importlib.util.spec_from_file_location("hostile_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("hostile_corpus", module)
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus()


@pytest.fixture(scope="module")
def canaries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canaries")


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, canaries: Path) -> dict[str, Any]:
    return corpus.build(tmp_path_factory.mktemp("hostile"), canaries)


def _upload(client: Any, case: Any) -> Any:
    files = {"file": (case.path.name, case.path.read_bytes(), "application/octet-stream")}
    return client.post("/v1/models", files=files, data=dict(case.fields))


def _scratch(env: dict[str, str]) -> list[str]:
    scratch = Path(env["MODELPRESS_DATA_DIR"]) / "storage" / "scratch"
    return sorted(str(p) for p in scratch.rglob("*")) if scratch.exists() else []


def _refusal_problem(response: Any, case: Any, elapsed: float) -> str | None:
    """What is wrong with the answer to one hostile upload (None: nothing)."""
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}: {response.text[:200]}"
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return f"not problem+json: {response.headers.get('content-type')}"
    body = response.json()
    if (response.status_code, body.get("code")) != (case.status, case.code):
        return f"{response.status_code} {body.get('code')}, expected {case.status} {case.code}"
    if elapsed > REFUSAL_BOUND_S:
        return f"answered after {elapsed:.1f} s"
    return None


def test_the_corpus_covers_every_class(cases: dict[str, Any]) -> None:
    expected = {
        "ts-data-pkl-reduce-proto0",
        "ts-data-pkl-reduce-proto5",
        "ts-data-pkl-inst",
        "ts-data-pkl-obj",
        "ts-data-pkl-build-setstate",
        "ts-data-pkl-newobj-ex",
        "ts-data-pkl-ext1",
        "ts-data-pkl-ext2",
        "ts-data-pkl-ext4",
        "ts-data-pkl-lookalike-torch-prefix",
        "pt2-nested-zip-data-pkl",
        "ts-data-pkl-bomb-opcodes",
        "ts-data-pkl-bomb-memo",
        "ts-data-pkl-bomb-depth",
        "zip-duplicate-member",
        "zip-overlapping-members",
        "zip-crc-error-tensor",
        "zip-bad-zlib",
        "zip64-lie",
        "zip-directory-50000-same-name",
        "polyglot-zip-after-onnx",
    }
    assert expected <= set(cases)


def test_the_benign_bases_of_the_corpus_pass_the_pre_scan(tmp_path: Path) -> None:
    """The hostile files are refused for what was added, not for a broken base archive."""
    from app.ml_models.formats import detect_format

    for kind, members in {"torchscript": corpus.torchscript(), "pt2": corpus.pt2()}.items():
        path = tmp_path / f"{kind}.bin"
        path.write_bytes(corpus.zip_bytes(members))
        assert detect_format(path).format == kind


def test_every_hostile_upload_is_refused_at_once_and_leaves_nothing(
    client: Any, env: dict[str, str], cases: dict[str, Any], canaries: Path
) -> None:
    failures: dict[str, str] = {}
    for name, case in cases.items():
        started = time.monotonic()
        response = _upload(client, case)
        problem = _refusal_problem(response, case, time.monotonic() - started)
        left = _scratch(env)
        if problem or left:
            failures[name] = problem or f"left {left}"

    assert failures == {}
    assert client.get("/v1/models").json()["items"] == []
    assert sorted(p.name for p in canaries.iterdir()) == []


def test_health_answers_while_four_hostile_uploads_are_checked(
    client: Any, cases: dict[str, Any], canaries: Path
) -> None:
    """The pre-scan runs in the threadpool and is bounded: /healthz keeps answering while the
    most expensive uploads for it (the opcode budget twice, the memo and the opcode cap) are
    checked concurrently, and each is still refused in time."""
    hostile = [
        cases[n]
        for n in (
            "ts-budget-bomb",
            "ts-data-pkl-bomb-memo",
            "ts-data-pkl-bomb-opcodes",
            "ts-budget-bomb",
        )
    ]
    results: list[tuple[Any, Any, float]] = []
    lock = threading.Lock()

    def upload(case: Any) -> None:
        started = time.monotonic()
        response = _upload(client, case)
        with lock:
            results.append((case, response, time.monotonic() - started))

    threads = [threading.Thread(target=upload, args=(c,)) for c in hostile]
    for thread in threads:
        thread.start()
    latencies = []
    while any(t.is_alive() for t in threads):
        started = time.monotonic()
        assert client.get("/healthz").status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    for thread in threads:
        thread.join(REFUSAL_BOUND_S)

    assert len(results) == len(hostile)
    assert [_refusal_problem(r, c, t) for c, r, t in results] == [None] * len(hostile)
    assert latencies, "no health request ran while the uploads were in flight"
    assert max(latencies) < HEALTH_BOUND_S
    assert sorted(p.name for p in canaries.iterdir()) == []
