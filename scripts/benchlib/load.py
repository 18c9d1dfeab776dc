"""The API under load (`python scripts/bench.py --load`, saved as docs/bench/load.json).

For each database mode, against real services it starts itself:

- `sqlite`: the embedded default, `modelpress run` on a fresh data directory;
- `postgres`: `modelpress api` and a Celery `modelpress worker` on Postgres and Redis
  (BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/modelpress_bench, created
  if missing and EMPTIED first; BENCH_BROKER_URL, default redis://127.0.0.1:6379/15, flushed);
  skipped, with the reason recorded, where either is unreachable.

it measures, while the worker runs a real job (a transformer encoder's int8 quantization, about
a minute, four queued back to back):

1. reads: `clients` asyncio clients (16, then 64) each polling every `interval` seconds, in
   turn, `GET /v1/jobs/{id}` (the running job), `GET /v1/jobs?limit=20` and
   `GET /v1/models/{id}`, for `seconds`: p50/p99/max latency, errors, requests per second;
   again with MODELPRESS_API_WORKERS=2 where the CLI has that setting;
2. a burst of 500 concurrent `POST /v1/jobs` of a tiny network's quantization, half of them
   in pairs that share an `Idempotency-Key` (a retry racing its original): every answer 202,
   every pair the same job; then the time until every job is terminal, bounded: what is still
   queued after `burst_wait_s` is cancelled (and counted as such), so the run always ends;
3. a 2 GiB upload (random bytes, so refused 415 once received in full: the time covers
   receiving, parsing, hashing and writing the file and the format check) sent with
   sendfile() on a raw socket, so that the client costs nothing: MB/s, and the API's resident
   memory (VmRSS) sampled every 20 ms, before and at its highest.

The rate limit and the per-tenant active-jobs limit are raised out of the way (the limiter still
counts each request), and a job's child gets one thread (MODELPRESS_SANDBOX_THREADS=1) so that
a 2-core machine keeps a core for the API: the sizing README.md recommends.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchlib import BENCH_DIR, ROOT
from benchlib.service import free_port, rss_kb

LOAD_JSON = BENCH_DIR / "load.json"
READ_PATHS = ("/v1/jobs/{job}", "/v1/jobs?limit=20", "/v1/models/{model}")
TARGETS_MS = {16: 20.0, 64: 50.0}  # p99 targets of issue #11
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/modelpress_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
UPLOAD_TARGET_MB_S, RSS_TARGET_MB = 200.0, 50.0


# ---------------------------------------------------------------- services


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPRESS_")}
    env.update(
        PYTHONPATH=str(ROOT),
        MODELPRESS_RATE_LIMIT_PER_MINUTE="1000000000",
        MODELPRESS_TENANT_MAX_ACTIVE_JOBS="0",
        MODELPRESS_SANDBOX_THREADS="1",
    )
    env.update(extra)
    return env


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_healthy(base: str, procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    for _ in range(480):
        if any(p.poll() is not None for p in procs):
            break
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the service did not start; its log: {log}\n{log.read_text()[-3000:]}")


def _postgres_ready(url: str) -> str | None:
    """None when `url` can be used (creating the database if missing), else why not."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        return None
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            return f"Postgres unreachable ({str(exc).strip().splitlines()[0]})"
    admin = parsed.set(drivername="postgresql", database="postgres")
    try:
        with psycopg.connect(
            admin.render_as_string(hide_password=False), connect_timeout=3, autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{parsed.database}"')
        return None
    except psycopg.Error as exc:
        return f"could not create {parsed.database} ({str(exc).strip().splitlines()[0]})"


def _redis_ready(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).flushdb()
        return None
    except (redis.RedisError, OSError) as exc:
        return f"Redis unreachable ({exc})"


@contextmanager
def service(mode: str, tmp: Path, api_workers: int) -> Iterator[dict[str, Any]]:
    """The running service of `mode`: its base URL, the API's pid and the processes."""
    port = free_port()
    log = tmp / f"{mode}-{api_workers}.log"
    extra = {"MODELPRESS_API_WORKERS": str(api_workers)}
    if mode == "sqlite":
        data = tmp / f"data-{api_workers}"
        env = _env({**extra, "MODELPRESS_DATA_DIR": str(data), "PORT": str(port)})
        procs = [_spawn(["run"], env, log)]
    else:
        env = _env(
            {
                **extra,
                "MODELPRESS_DATA_DIR": str(tmp / f"pg-data-{api_workers}"),
                "MODELPRESS_DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG),
                "MODELPRESS_BROKER_URL": os.environ.get("BENCH_BROKER_URL", DEFAULT_REDIS),
            }
        )
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, cwd=ROOT, check=True)
        procs = [
            _spawn(["api", "--host", "127.0.0.1", "--port", str(port)], env, log),
            _spawn(["worker"], env, log),
        ]
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, procs, log)
        yield {"base": base, "api_pid": procs[0].pid, "log": log}
    finally:
        for proc in procs:
            _stop(proc)


def _serving_pids(api_pid: int) -> list[int]:
    """The API's pid and its uvicorn worker children (not the embedded worker)."""
    pids = [api_pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == api_pid and b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes, from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _api_processes(api_pid: int) -> int:
    """The API's serving processes: the pid itself, or its uvicorn worker children."""
    return max(1, len(_serving_pids(api_pid)) - 1)


# ---------------------------------------------------------------- the models and the jobs


def _build_models(tmp: Path) -> dict[str, Path]:
    import torch

    from benchlib import transformer

    tiny = tmp / "tiny.onnx"
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    torch.onnx.export(
        net.eval(),
        (torch.randn(2, 32),),
        str(tiny),
        input_names=["input"],
        dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},),
        external_data=False,
        verbose=False,
    )
    return {"encoder": transformer.build_transformer(tmp / "enc.onnx"), "tiny": tiny}


def _upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as fh:
        response = client.post("/v1/models?wait=true", files={"file": (path.name, fh)})
    body = response.json()
    assert response.status_code == 201 and body["status"] == "ready", body
    return str(body["id"])


def encoder_spec(model_id: str) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "steps": [{"op": "quantize"}],
        "benchmark": {
            "batch_sizes": [1, 32],
            "iterations": 20,
            "input_shapes": {"input_ids": [1, 128]},
        },
    }


def tiny_spec(model_id: str) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "steps": [{"op": "quantize"}],
        "benchmark": {"batch_sizes": [1], "iterations": 5, "warmup": 1, "memory": False},
    }


def _status(client: httpx.Client, job_id: str) -> str:
    return str(client.get(f"/v1/jobs/{job_id}").json()["status"])


def _background_jobs(client: httpx.Client, model_id: str, n: int = 4) -> list[str]:
    """`n` encoder jobs back to back; returns once the first one runs."""
    ids = [str(client.post("/v1/jobs", json=encoder_spec(model_id)).json()["id"]) for _ in range(n)]
    deadline = time.monotonic() + 120
    while _status(client, ids[0]) == "queued" and time.monotonic() < deadline:
        time.sleep(0.2)
    return ids


# ---------------------------------------------------------------- reads


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _reads(
    base: str, paths: list[str], clients: int, seconds: float, interval: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds

        async def poller(i: int) -> None:
            k = i
            due = start + interval * i / clients  # spread the first requests over one interval
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                if loop.time() >= deadline:
                    return
                path = paths[k % len(paths)]
                k += 1
                sent = time.perf_counter()
                try:
                    response = await client.get(path)
                    ok = response.status_code == 200
                    err = str(response.status_code)
                except httpx.HTTPError as exc:
                    ok, err = False, type(exc).__name__
                latencies.append((time.perf_counter() - sent) * 1000)
                if not ok:
                    errors[err] = errors.get(err, 0) + 1
                due += interval  # a fixed schedule: a late answer is not followed by a pause

        await asyncio.gather(*(poller(i) for i in range(clients)))
        elapsed = loop.time() - start
    return {
        "clients": clients,
        "interval_s": interval,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_pct(latencies, 50), 2),
        "p99_ms": round(_pct(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
    }


def read_phase(
    client: httpx.Client,
    base: str,
    paths: list[str],
    clients: int,
    seconds: float,
    interval: float,
    running: list[str],
    api_pid: int,
) -> dict[str, Any]:
    """The read mix at `clients`, and whether a background job ran before and after it."""
    before = any(_status(client, job) == "running" for job in running)
    pids = _serving_pids(api_pid)
    api_cpu, own_cpu = _cpu_seconds(pids), time.process_time()
    result = asyncio.run(_reads(base, paths, clients, seconds, interval))
    n = max(1, result["requests"])
    result["api_cpu_ms_per_request"] = round((_cpu_seconds(pids) - api_cpu) * 1000 / n, 2)
    result["load_generator_cpu_ms_per_request"] = round(
        (time.process_time() - own_cpu) * 1000 / n, 2
    )
    result["job_running_before"] = before
    result["job_running_after"] = any(_status(client, job) == "running" for job in running)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    return result


# ---------------------------------------------------------------- the POST burst


async def _burst(base: str, spec: dict[str, Any], n: int) -> dict[str, Any]:
    keyed = n // 2
    keys = [f"bench-{uuid.uuid4()}" for _ in range(keyed // 2)]
    plan: list[str | None] = [None] * (n - 2 * len(keys)) + [k for k in keys for _ in (0, 1)]
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def post(key: str | None) -> tuple[str | None, int, str | None, float]:
            headers = {"Idempotency-Key": key} if key else {}
            sent = time.perf_counter()
            try:
                response = await client.post("/v1/jobs", json=spec, headers=headers)
            except httpx.HTTPError as exc:
                return key, 0, type(exc).__name__, time.perf_counter() - sent
            job = response.json().get("id") if response.status_code == 202 else response.text
            return key, response.status_code, job, time.perf_counter() - sent

        started = time.perf_counter()
        answers = await asyncio.gather(*(post(k) for k in plan))
        elapsed = time.perf_counter() - started
    by_key: dict[str, set[str | None]] = {}
    for key, _status_code, job, _t in answers:
        if key:
            by_key.setdefault(key, set()).add(job)
    statuses: dict[str, int] = {}
    for _k, code, _j, _t in answers:
        statuses[str(code)] = statuses.get(str(code), 0) + 1
    jobs = sorted({str(j) for _k, code, j, _t in answers if code == 202})
    return {
        "requests": n,
        "with_idempotency_key": 2 * len(keys),
        "statuses": statuses,
        "replays_same_job": sum(len(v) == 1 for v in by_key.values()),
        "keys": len(keys),
        "distinct_jobs": len(jobs),
        "expected_jobs": n - len(keys),
        "seconds": round(elapsed, 2),
        "p50_ms": round(_pct([t * 1000 for *_x, t in answers], 50), 1),
        "p99_ms": round(_pct([t * 1000 for *_x, t in answers], 99), 1),
        "job_ids": jobs,
    }


def _all_jobs(client: httpx.Client) -> dict[str, str]:
    """Every job's status, through the paginated list."""
    out: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/jobs", params=params).json()
        out.update({j["id"]: j["status"] for j in page["items"]})
        cursor = page.get("next_cursor")
        if not cursor:
            return out


def burst_phase(
    client: httpx.Client, base: str, model_id: str, n: int, wait_s: float
) -> dict[str, Any]:
    result = asyncio.run(_burst(base, tiny_spec(model_id), n))
    ids = set(result.pop("job_ids"))
    started = time.perf_counter()
    deadline = started + wait_s
    while True:
        statuses = {k: v for k, v in _all_jobs(client).items() if k in ids}
        active = [k for k, v in statuses.items() if v in ("queued", "running")]
        if not active or time.perf_counter() >= deadline:
            break
        time.sleep(2)
    counts_at_bound = _count(statuses)
    cancelled_by_bench = 0
    if active:  # the bound passed: cancel the rest, and see them all end
        for job_id in active:
            if client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200:
                cancelled_by_bench += 1
        end = time.perf_counter() + 120
        while time.perf_counter() < end:
            statuses = {k: v for k, v in _all_jobs(client).items() if k in ids}
            if not [k for k, v in statuses.items() if v in ("queued", "running")]:
                break
            time.sleep(1)
    done = counts_at_bound.get("succeeded", 0) + counts_at_bound.get("failed", 0)
    waited = time.perf_counter() - started
    result.update(
        {
            "wait_bound_s": wait_s,
            "waited_s": round(waited, 1),
            "at_bound": counts_at_bound,
            "cancelled_by_bench": cancelled_by_bench,
            "final": _count(statuses),
            "all_terminal": all(v not in ("queued", "running") for v in statuses.values())
            and len(statuses) == len(ids),
            "tiny_jobs_per_hour": round(done / min(waited, wait_s) * 3600) if done else 0,
        }
    )
    return result


def _count(statuses: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for status in statuses.values():
        out[status] = out.get(status, 0) + 1
    return out


# ---------------------------------------------------------------- the upload


def make_big_file(path: Path, size: int) -> None:
    """`size` bytes that no compressor or format check shortcuts: a random 16 MiB block,
    each MiB of every copy stamped with its offset."""
    block = bytearray(os.urandom(16 * 1024**2))
    with path.open("wb") as fh:
        written = 0
        while written < size:
            for mib in range(0, len(block), 1024**2):
                block[mib : mib + 8] = (written + mib).to_bytes(8, "little")
            chunk = memoryview(block)[: min(len(block), size - written)]
            fh.write(chunk)
            written += len(chunk)


def _sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], rss_kb(pid))
        except OSError:
            return
        stop.wait(0.02)


def upload_phase(base: str, api_pid: int, path: Path) -> dict[str, Any]:
    """POST `path` as the multipart `file` part over a raw socket, the body by sendfile()."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size
    host, port = base.removeprefix("http://").split(":")
    request = (
        f"POST /v1/models HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
        f"boundary={boundary}\r\nContent-Length: {len(head) + size + len(tail)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    rss_before, hwm_before = rss_kb(api_pid), rss_kb(api_pid, "VmHWM")
    peak, stop = [rss_before], threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(api_pid, stop, peak), daemon=True)
    sampler.start()
    started = time.perf_counter()
    with socket.create_connection((host, int(port))) as sock, path.open("rb") as fh:
        sock.sendall(request + head)
        sock.sendfile(fh)
        sock.sendall(tail)
        sent = time.perf_counter()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    return {
        "bytes": size,
        "status": int(status_line.split()[1]) if status_line else 0,
        "seconds": round(elapsed, 2),
        "send_seconds": round(sent - started, 2),
        "mb_per_s": round(size / 1e6 / elapsed, 1),
        "rss_before_mb": round(rss_before / 1024, 1),
        "rss_peak_mb": round(peak[0] / 1024, 1),
        "rss_growth_mb": round((peak[0] - rss_before) / 1024, 1),
        "hwm_before_mb": round(hwm_before / 1024, 1),
        "hwm_after_mb": round(rss_kb(api_pid, "VmHWM") / 1024, 1),
    }


# ---------------------------------------------------------------- one mode, all modes


def measure_mode(
    mode: str, tmp: Path, models: dict[str, Path], big: Path | None, opts: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {"reads": {}}
    for workers in opts["api_workers"]:
        with service(mode, tmp, workers) as svc:
            base = svc["base"]
            with httpx.Client(base_url=base, timeout=600) as client:
                encoder = _upload(client, models["encoder"])
                tiny = _upload(client, models["tiny"])
                running = _background_jobs(client, encoder)
                paths = [p.format(job=running[0], model=tiny) for p in READ_PATHS]
                phases = [
                    read_phase(
                        client,
                        base,
                        paths,
                        c,
                        opts["seconds"],
                        opts["interval"],
                        running,
                        svc["api_pid"],
                    )
                    for c in opts["clients"]
                ]
                out["reads"][str(workers)] = {
                    "api_processes": _api_processes(svc["api_pid"]),
                    "phases": phases,
                }
                if workers != opts["api_workers"][0]:
                    continue
                for job_id in running:  # the burst's jobs should not wait for the encoders
                    client.post(f"/v1/jobs/{job_id}/cancel")
                out["burst"] = burst_phase(client, base, tiny, opts["burst"], opts["burst_wait"])
                if big is not None:
                    out["upload"] = upload_phase(base, svc["api_pid"], big)
    return out


def _cpu() -> dict[str, Any]:
    flags: set[str] = set()
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags |= {f for f in line.split(":", 1)[1].split() if f in ("avx2", "avx512_vnni")}
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    return {"cpu_model": model, "cores": os.cpu_count(), "cpu_flags": sorted(flags)}


def api_workers_supported() -> bool:
    """Whether this CLI reads MODELPRESS_API_WORKERS (several uvicorn processes)."""
    from app.core.config import Settings

    return "api_workers" in Settings.model_fields


def measure(
    command: str,
    modes: tuple[str, ...] = ("sqlite", "postgres"),
    clients: tuple[int, ...] = (16, 64),
    seconds: float = 20.0,
    interval: float = 0.25,
    burst: int = 500,
    burst_wait: float = 480.0,
    upload_bytes: int = 2 * 1024**3,
) -> dict[str, Any]:
    """Every measurement of the section, as load.json records it."""
    started = time.perf_counter()
    workers = (1, 2) if api_workers_supported() else (1,)
    opts = {
        "clients": clients,
        "seconds": seconds,
        "interval": interval,
        "burst": burst,
        "burst_wait": burst_wait,
        "api_workers": workers,
    }
    record: dict[str, Any] = {
        "run": {
            "command": command,
            "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
            "load_average_1min_before": round(os.getloadavg()[0], 2),
            **_cpu(),
            "options": {**opts, "upload_bytes": upload_bytes},
        },
        "modes": {},
        "skipped": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="modelpress-bench-load-"))
    big: Path | None = None
    try:
        models = _build_models(tmp)
        free = shutil.disk_usage(tmp).free
        if upload_bytes and free > upload_bytes * 3:
            big = tmp / "big.bin"
            make_big_file(big, upload_bytes)
        elif upload_bytes:
            record["skipped"]["upload"] = f"{free / 1e9:.1f} GB free, the upload needs 3x"
        for mode in modes:
            why = None
            if mode == "postgres":
                why = _postgres_ready(
                    os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG)
                ) or _redis_ready(os.environ.get("BENCH_BROKER_URL", DEFAULT_REDIS))
            if why:
                record["skipped"][mode] = why
                continue
            print(f"load: {mode} ...", flush=True)
            record["modes"][mode] = measure_mode(mode, tmp, models, big, opts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["run"]["wall_s"] = round(time.perf_counter() - started, 1)
    return record


# ---------------------------------------------------------------- BENCHMARKS.md


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(data: dict[str, Any] | None) -> str:
    """The "API under load" section of BENCHMARKS.md."""
    lines = ["## API under load", ""]
    if data is None:
        lines.append("Not measured yet: `python scripts/bench.py --load`.")
        return "\n".join(lines) + "\n"
    run, opts = data["run"], data["run"]["options"]
    lines += [
        f"Measured by `{run['command']}` (scripts/benchlib/load.py) on {run['date']} in "
        f"{run['wall_s'] / 60:.0f} min, saved in `docs/bench/load.json`: {run['cpu_model']}, "
        f"{run['cores']} cores (flags {', '.join(run['cpu_flags']) or 'neither AVX2 nor VNNI'}), "
        f"1-minute load average {run['load_average_1min_before']:.2f} as it started. Load "
        "generator and services on the same machine, over loopback. While the reads run, the "
        "worker runs a real job (a transformer encoder's int8 quantization, its child on one "
        "thread: `MODELPRESS_SANDBOX_THREADS=1`). Each client polls every "
        f"{opts['interval']} s, in turn `GET /v1/jobs/{{id}}` (the running job), "
        "`GET /v1/jobs?limit=20` and `GET /v1/models/{id}`, for "
        f"{opts['seconds']:.0f} s; latency is the client's, from sending to the last byte. "
        "The rate limit and the active-jobs limit are raised out of the way.",
        "",
        "| Database | API processes | Clients | Requests/s (of offered) | p50 ms | p99 ms "
        "| max ms | Errors "
        "| Job ran throughout | p99 target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, result in data["modes"].items():
        for workers, reads in result["reads"].items():
            for ph in reads["phases"]:
                target = TARGETS_MS.get(ph["clients"])
                verdict = (
                    f"<= {target:.0f} ms: {_met(ph['p99_ms'] <= target and not ph['errors'])}"
                    if target
                    else ""
                )
                if target and ph["p99_ms"] > target:
                    verdict += f" by {ph['p99_ms'] - target:.0f} ms"
                lines.append(
                    f"| {_mode_name(mode)} | {workers} | {ph['clients']} "
                    f"| {ph['rps']:.0f} of {ph['clients'] / ph['interval_s']:.0f} "
                    f"| {ph['p50_ms']:.1f} | {ph['p99_ms']:.1f} | {ph['max_ms']:.0f} "
                    f"| {ph['errors']} | {_ran(ph)} "
                    f"| {verdict} |"
                )
    lines += _misses(data)
    lines += ["", *_burst_lines(data), "", *_upload_lines(data)]
    for what, why in data.get("skipped", {}).items():
        lines += ["", f"Not measured: {what} ({why})."]
    return "\n".join(lines) + "\n"


def _misses(data: dict[str, Any]) -> list[str]:
    """Why a read target was missed, from the record: did the API keep up with the offered
    rate (below it, the requests queued for a CPU)?"""
    behind, kept_up = [], []
    for mode, result in data["modes"].items():
        for workers, reads in result["reads"].items():
            for ph in reads["phases"]:
                target = TARGETS_MS.get(ph["clients"])
                if target is None or (ph["p99_ms"] <= target and not ph["errors"]):
                    continue
                offered = ph["clients"] / ph["interval_s"]
                where = f"{_mode_name(mode)}, {workers} API process(es), {ph['clients']} clients"
                if ph["rps"] < 0.95 * offered:
                    behind.append(f"{where} ({ph['rps']:.0f} of {offered:.0f} requests/s)")
                else:
                    kept_up.append(where)
    if not behind and not kept_up:
        return []
    cores = data["run"]["cores"]
    out = [""]
    if behind:
        out.append(
            "Where a target is missed and the API served fewer requests than offered ("
            + "; ".join(behind)
            + f"), the {cores} cores were saturated: besides the API they run the load "
            "generator, the worker's job and, on Postgres, the database, Redis and Celery. "
            + _cpu_note(data)
            + "Requests then queue for a CPU, not for a lock (reads take none). More cores, or "
            "API processes on cores of their own, are the remedy."
        )
    if kept_up:
        out.append(
            "Missed although the API kept up with the offered rate: "
            + "; ".join(kept_up)
            + " (a tail of slow answers; this record does not say which of the machine's "
            "other work delayed them)."
        )
    return out


def _cpu_note(data: dict[str, Any]) -> str:
    """CPU per request of the API and of the load generator, where the record has them."""
    api, gen = [], []
    for result in data["modes"].values():
        for reads in result["reads"].values():
            for ph in reads["phases"]:
                if "api_cpu_ms_per_request" in ph:
                    api.append(ph["api_cpu_ms_per_request"])
                    gen.append(ph["load_generator_cpu_ms_per_request"])
    if not api:
        return ""
    return (
        f"Per request the API used {min(api):.1f}-{max(api):.1f} ms of CPU and the load "
        f"generator {min(gen):.1f}-{max(gen):.1f} ms. "
    )


def _ran(phase: dict[str, Any]) -> str:
    before, after = phase.get("job_running_before", True), phase["job_running_after"]
    return "yes" if before and after else ("at the start" if before else "no")


def _mode_name(mode: str) -> str:
    return {"sqlite": "SQLite (embedded)", "postgres": "Postgres + Redis/Celery"}.get(mode, mode)


def _burst_lines(data: dict[str, Any]) -> list[str]:
    rows = []
    for mode, result in data["modes"].items():
        b = result.get("burst")
        if not b:
            continue
        accepted = b["statuses"].get("202", 0) == b["requests"]
        replayed = b["replays_same_job"] == b["keys"] and b["distinct_jobs"] == b["expected_jobs"]
        waited = b["wait_bound_s"] if b["cancelled_by_bench"] else b["waited_s"]
        then = (
            f"; then {b['cancelled_by_bench']} cancelled by the bench"
            if b["cancelled_by_bench"]
            else ""
        )
        rows.append(
            f"| {_mode_name(mode)} | {b['requests']} ({b['with_idempotency_key']} keyed) "
            f"| {', '.join(f'{k}: {v}' for k, v in sorted(b['statuses'].items()))} "
            f"| {b['replays_same_job']}/{b['keys']} | {b['distinct_jobs']}/{b['expected_jobs']} "
            f"| {b['seconds']:.1f} s (p99 {b['p99_ms']:.0f} ms) "
            f"| {_counts(b['at_bound'])} after {waited:.0f} s{then} "
            f"| {'yes' if b['all_terminal'] else '**no**'} | {b['tiny_jobs_per_hour']} "
            f"| {_met(accepted and replayed and b['all_terminal'])} |"
        )
    if not rows:
        return []
    return [
        "Then a burst of concurrent `POST /v1/jobs` (a tiny MLP's quantization): half of them in "
        "pairs that share an `Idempotency-Key`, the retry racing its original. Each pair must "
        "answer the same job, and every job must reach a terminal state; the wait is bounded, "
        "and what is still queued at the bound is cancelled (so the run always ends: a "
        "cancelled job is terminal, but it did not run). Jobs/hour counts the tiny jobs that "
        "finished within the bound (one worker process, one job at a time).",
        "",
        "| Database | Requests | Answers | Pairs, same job | Jobs created | All answered in "
        "| Jobs by status | All terminal | Tiny jobs/hour | Target |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _upload_lines(data: dict[str, Any]) -> list[str]:
    rows = []
    for mode, result in data["modes"].items():
        u = result.get("upload")
        if not u:
            continue
        ok = u["mb_per_s"] >= UPLOAD_TARGET_MB_S and u["rss_growth_mb"] < RSS_TARGET_MB
        rows.append(
            f"| {_mode_name(mode)} | {u['bytes'] / 1024**3:.1f} GiB | {u['status']} "
            f"| {u['seconds']:.1f} | {u['mb_per_s']:.0f} | {u['rss_before_mb']:.0f} "
            f"| {u['rss_peak_mb']:.0f} | {u['rss_growth_mb']:.1f} "
            f"| >= {UPLOAD_TARGET_MB_S:.0f} MB/s, < {RSS_TARGET_MB:.0f} MB: {_met(ok)} |"
        )
    if not rows:
        return []
    return [
        "And one large upload to `POST /v1/models`: random bytes, so the answer is 415 once the "
        "whole body has been received, parsed, hashed (sha256) and written to scratch and the "
        "format check has run; the client sends the body with `sendfile()` on a raw socket. "
        "Resident memory of the API process (VmRSS), sampled every 20 ms.",
        "",
        "| Database | Size | Status | Seconds | MB/s | RSS before MB | RSS peak MB "
        "| RSS growth MB | Target |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
