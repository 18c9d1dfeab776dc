"""Hostile uploads: how fast each class of the hostile corpus (tests/ml_models/hostile_corpus.py)
is refused, and how `GET /healthz` answers while the most expensive ones are checked at once.

`measure()` times, per class, the torch-free pre-scan alone (`detect_format`, in this process,
best of `rounds`) and the whole refusal over HTTP by a real `modelpress run` (median of
`rounds`), then the health latency idle and under 4 concurrent hostile uploads. `render(data)` is
the markdown section. `python scripts/benchlib/hostile.py` measures and writes
docs/bench/hostile.json.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_JSON = ROOT / "docs" / "bench" / "hostile.json"
CONCURRENT = (
    "ts-budget-bomb",
    "ts-data-pkl-bomb-memo",
    "ts-data-pkl-bomb-opcodes",
    "ts-budget-bomb",
)


def _corpus() -> Any:
    path = ROOT / "tests" / "ml_models" / "hostile_corpus.py"
    spec = importlib.util.spec_from_file_location("hostile_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("hostile_corpus", module)
    spec.loader.exec_module(module)
    return module


def _service() -> Any:
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    from benchlib import service

    return service


def _pre_scan(path: Path, rounds: int) -> float:
    from app.core.errors import AppError
    from app.ml_models.formats import detect_format

    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        with contextlib.suppress(AppError):
            detect_format(path)
        times.append(time.perf_counter() - started)
    return min(times)


def _post(client: Any, case: Any) -> tuple[int, str, float]:
    files = {"file": (case.path.name, case.path.read_bytes(), "application/octet-stream")}
    started = time.perf_counter()
    response = client.post("/v1/models", files=files, data=dict(case.fields))
    elapsed = time.perf_counter() - started
    code = response.json().get("code", "") if response.status_code >= 400 else ""
    return response.status_code, code, elapsed


def _health(
    client: Any, while_alive: list[threading.Thread] | None = None, n: int = 50
) -> list[float]:
    latencies = []
    while (while_alive and any(t.is_alive() for t in while_alive)) or (
        not while_alive and len(latencies) < n
    ):
        started = time.perf_counter()
        client.get("/healthz")
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    return latencies


def _under_load(base_url: str, cases: dict[str, Any]) -> dict[str, Any]:
    import httpx

    uploads: list[dict[str, Any]] = []

    def upload(name: str) -> None:
        with httpx.Client(base_url=base_url, timeout=120) as own:
            status, code, seconds = _post(own, cases[name])
        uploads.append({"class": name, "status": status, "code": code, "seconds": seconds})

    threads = [threading.Thread(target=upload, args=(n,)) for n in CONCURRENT]
    for thread in threads:
        thread.start()
    with httpx.Client(base_url=base_url, timeout=120) as client:
        latencies = _health(client, threads)
    for thread in threads:
        thread.join()
    return {"uploads": uploads, "health": _stats(latencies)}


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_s": statistics.median(values),
        "max_s": max(values),
    }


def measure(rounds: int = 3) -> dict[str, Any]:
    """Refusal times per class, and health latency idle and under concurrent hostile uploads."""
    from app.ml_models import pickle_scan, torch_archive

    corpus, service = _corpus(), _service()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        canaries = tmp / "canaries"
        canaries.mkdir()
        cases = corpus.build(tmp / "corpus", canaries)
        classes = {
            name: {"bytes": case.path.stat().st_size, "pre_scan_s": _pre_scan(case.path, rounds)}
            for name, case in cases.items()
        }
        proc, client = service.start_service(tmp / "data")
        try:
            for name, case in cases.items():
                answers = [_post(client, case) for _ in range(rounds)]
                classes[name].update(
                    status=answers[-1][0],
                    code=answers[-1][1],
                    expected=f"{case.status} {case.code}",
                    http_s=statistics.median(a[2] for a in answers),
                )
            idle = _stats(_health(client))
            loaded = _under_load(str(client.base_url), cases)
        finally:
            client.close()
            service.stop_service(proc)
        ran = sorted(p.name for p in canaries.iterdir())
    return {
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "rounds": rounds,
        },
        "caps": {
            "pickle_bytes": pickle_scan.MAX_PICKLE_BYTES,
            "opcodes_per_pickle": pickle_scan.MAX_OPS,
            "opcodes_per_upload": pickle_scan.MAX_ARCHIVE_OPS,
            "stack": pickle_scan.MAX_STACK,
            "memo": pickle_scan.MAX_MEMO,
            "zip_members": torch_archive.MAX_MEMBERS,
        },
        "classes": classes,
        "health_idle": idle,
        "under_load": loaded,
        "canaries_touched": ran,
    }


def render(data: dict[str, Any]) -> str:
    """The markdown section: one row per class, then the health latency."""
    env, caps = data["environment"], data["caps"]
    lines = [
        "## Hostile uploads",
        "",
        f"Each class of the generated hostile corpus, refused by the torch-free pre-scan "
        f"(Python {env['python']}, {env['cpus']} CPUs; best / median of {env['rounds']}). "
        f"Caps: {caps['opcodes_per_pickle']:,} opcodes per pickle, "
        f"{caps['opcodes_per_upload']:,} per upload, stack {caps['stack']:,}, memo "
        f"{caps['memo']:,}, {caps['pickle_bytes'] // 2**20} MiB per pickle member. Canaries "
        f"touched: {len(data['canaries_touched'])}.",
        "",
        "| class | bytes | answer | pre-scan s | HTTP s |",
        "|---|---:|---|---:|---:|",
    ]
    for name, row in sorted(data["classes"].items(), key=lambda kv: -kv[1]["http_s"]):
        lines.append(
            f"| {name} | {row['bytes']:,} | {row['status']} `{row['code']}` | "
            f"{row['pre_scan_s']:.3f} | {row['http_s']:.3f} |"
        )
    idle, loaded = data["health_idle"], data["under_load"]
    slowest = max(u["seconds"] for u in loaded["uploads"])
    lines += [
        "",
        f"`GET /healthz`: p50 {idle['p50_s'] * 1000:.1f} ms, max {idle['max_s'] * 1000:.1f} ms "
        f"idle; p50 {loaded['health']['p50_s'] * 1000:.1f} ms, max "
        f"{loaded['health']['max_s'] * 1000:.1f} ms ({loaded['health']['n']} requests) while "
        f"{len(loaded['uploads'])} hostile uploads ({', '.join(CONCURRENT)}) were checked at "
        f"once; the slowest of those was refused after {slowest:.2f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    result = measure()
    HOSTILE_JSON.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
