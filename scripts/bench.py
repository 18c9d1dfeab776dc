"""`make bench`: measure ModelPress on this machine and print BENCHMARKS.md's tables.

Everything is measured in this one run, side by side:
1. service overhead: a quantize job's wall time through the API (embedded mode) vs the same
   work (quantize, load both, time both at the same batch sizes, compare outputs) in a script;
2. our dynamic int8 defaults vs ONNX Runtime's `quantize_dynamic` defaults on a transformer;
3. API read latency under sequential load;
4. API memory while streaming a large upload.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.measure.benchmark import compare_outputs, measure_latency  # noqa: E402

BATCHES, SEQ, ITERS = [1, 32], 128, 20


def build_transformer(path: Path) -> Path:
    """A BERT-sized-vocabulary encoder: 30522 x 256 embeddings, 4 layers (about 45 MB)."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(30522, 256)
            layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
            self.encoder = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.encoder(self.embed(input_ids)).mean(1)

    torch.manual_seed(0)
    dims = {0: torch.export.Dim("batch", max=1024), 1: torch.export.Dim("sequence", max=512)}
    torch.onnx.export(
        Encoder().eval(),
        (torch.randint(0, 30522, (2, 16)),),
        str(path),
        dynamic_shapes={"input_ids": dims},
        external_data=False,
        verbose=False,
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(data_dir: Path) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPRESS_")}
    env.update(PORT=str(port), MODELPRESS_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    for _ in range(240):
        try:
            if client.get("/healthz").status_code == 200:
                return proc, client
        except httpx.TransportError:
            time.sleep(0.25)
    raise RuntimeError("the service did not start")


def service_job(client: httpx.Client, model: Path) -> dict[str, Any]:
    with model.open("rb") as fh:
        m = client.post("/v1/models?wait=true", files={"file": (model.name, fh)}).json()
    spec = {
        "model_id": m["id"],
        "steps": [{"op": "quantize"}],
        "benchmark": {
            "batch_sizes": BATCHES,
            "iterations": ITERS,
            "input_shapes": {"input_ids": [1, SEQ]},
        },
    }
    started = time.perf_counter()
    job = client.post("/v1/jobs", json=spec).json()
    while (body := client.get(f"/v1/jobs/{job['id']}").json())["status"] in ("queued", "running"):
        time.sleep(0.2)
    wall = time.perf_counter() - started
    assert body["status"] == "succeeded", body
    return {
        "wall_s": wall,
        "job": body,
        "report": client.get(f"/v1/jobs/{job['id']}/report").json(),
    }


def direct_script(model: Path, out: Path, per_channel: bool) -> dict[str, Any]:
    """The same work by hand, in a fresh process of its own (like a user's script, and away
    from this process's torch threads): quantize, load both, time both, compare outputs."""
    argv = [sys.executable, __file__, "--direct", str(model), str(out), str(int(per_channel))]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _direct(model: Path, out: Path, per_channel: bool) -> dict[str, Any]:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    # ONNX Runtime's defaults, as a hand-written script would call it (per_channel aside).
    quantize_dynamic(str(model), str(out), per_channel=per_channel, weight_type=QuantType.QInt8)
    sessions = {k: ort.InferenceSession(str(p)) for k, p in (("fp32", model), ("int8", out))}
    rng = np.random.default_rng(0)
    latency = {}
    for batch in BATCHES:
        feeds = {"input_ids": rng.integers(0, 30522, (batch, SEQ), dtype=np.int64)}
        runners = {k: (lambda f, s=s: s.run(None, f)) for k, s in sessions.items()}
        latency[batch] = measure_latency(runners, feeds, iterations=ITERS, time_budget_s=60)
    feeds = {"input_ids": rng.integers(0, 30522, (32, SEQ), dtype=np.int64)}
    fid = compare_outputs(
        sessions["fp32"].run(None, feeds), sessions["int8"].run(None, feeds), ["out"]
    )
    return {
        "wall_s": time.perf_counter() - started,
        "latency": latency,
        "fidelity": fid["out"],
        "size": out.stat().st_size,
    }


def api_reads(client: httpx.Client, job_id: str, n: int = 500) -> dict[str, float]:
    times = []
    for i in range(n):
        t = time.perf_counter()
        path = f"/v1/jobs/{job_id}" if i % 2 else "/v1/jobs?limit=20"
        assert client.get(path).status_code == 200
        times.append((time.perf_counter() - t) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)), "n": n}


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def upload_memory(client: httpx.Client, pid: int, tmp: Path, mb: int = 512) -> dict[str, float]:
    """Stream a large (refused: unknown bytes, 415) upload and watch the API's resident memory."""
    big = tmp / "big.bin"
    with big.open("wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(1024 * 1024))
    before = rss_kb(pid)
    with big.open("rb") as fh:
        status = client.post("/v1/models", files={"file": ("big.bin", fh)}).status_code
    return {
        "upload_mb": mb,
        "status": status,
        "rss_before_mb": before / 1024,
        "peak_mb": rss_kb(pid, "VmHWM") / 1024,
    }


def seed_network(client: httpx.Client, tmp: Path) -> list[dict[str, Any]]:
    """The classic example network (examples/seed_network.py) through four jobs."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("seed", ROOT / "examples" / "seed_network.py")
    assert spec and spec.loader
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    x_train, y_train, x_test, y_test = seed.digits()
    model = seed.train(x_train, y_train)
    dims = {"x": {0: torch.export.Dim("batch", max=4096)}}
    program = torch.export.export(model, (torch.from_numpy(x_train[:2]),), dynamic_shapes=dims)
    torch.export.save(program, tmp / "seed.pt2")
    np.savez(tmp / "train.npz", x=x_train, labels=y_train)
    np.savez(tmp / "test.npz", x=x_test, labels=y_test)
    from app.client import Client

    api = Client(str(client.base_url))
    model_id = api.wait_model(api.upload("/v1/models", tmp / "seed.pt2")["id"])["id"]
    train_id = api.upload("/v1/datasets", tmp / "train.npz")["id"]
    test_id = api.upload("/v1/datasets", tmp / "test.npz")["id"]
    return seed.run(api, model_id, train_id, test_id)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="modelpress-bench-"))
    model = build_transformer(tmp / "encoder.onnx")
    proc, client = start_service(tmp / "data")
    try:
        service = service_job(client, model)
        ours_direct = direct_script(model, tmp / "pc.onnx", per_channel=True)
        ort_default = direct_script(model, tmp / "pt.onnx", per_channel=False)
        reads = api_reads(client, service["job"]["id"])
        memory = upload_memory(client, proc.pid, tmp)
        seed_rows = seed_network(client, tmp)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    keys = ("baseline", "optimized", "comparison", "fidelity", "environment", "steps")
    results = {
        "model_bytes": model.stat().st_size,
        "service": {"wall_s": service["wall_s"], "report": {k: service["report"][k] for k in keys}},
        "script_same_work": ours_direct,
        "ort_default_per_tensor": ort_default,
        "api_reads_ms": reads,
        "upload_memory": memory,
        "seed_network": seed_rows,
    }
    (ROOT / "BENCHMARKS.md").write_text(render(results))
    print(json.dumps(results, indent=1, default=str))


def _p50(facts: dict[str, Any], batch: int) -> float:
    return float(facts["latency_ms"][str(batch)]["p50"])


def render(r: dict[str, Any]) -> str:
    """BENCHMARKS.md from one run's results (every figure in it comes from this run)."""
    rep = r["service"]["report"]
    env, base, opt = rep["environment"], rep["baseline"], rep["optimized"]
    fid = next(iter(rep["fidelity"]["outputs"].values()))
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items())
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (`scripts/bench.py`) in one run on this machine kind: "
        f"{env['cpu_model']}, {env['cores']} cores (flags {', '.join(env['cpu_flags'])}); {libs}. "
        "Latencies are medians (p50) of interleaved runs; every ratio compares numbers from the "
        "same run. Rerun the command to refresh every figure here.",
        "",
        f"## Dynamic int8 on a {r['model_bytes'] / 1e6:.0f} MB transformer encoder (ONNX)",
        "",
        "A 4-layer encoder with a 30522 x 256 embedding (random weights), batch x 128 tokens, "
        "quantized by a ModelPress job with default settings, through the API (embedded mode).",
        "",
        "| | original | ModelPress int8 | ratio |",
        "| --- | --- | --- | --- |",
        f"| size (MB) | {base['size_bytes'] / 1e6:.1f} | {opt['size_bytes'] / 1e6:.1f} | "
        f"{opt['size_bytes'] / base['size_bytes']:.2f}x |",
    ]
    for b in BATCHES:
        lines.append(
            f"| p50 latency, batch {b} (ms) | {_p50(base, b):.2f} | {_p50(opt, b):.2f} | "
            f"{_p50(base, b) / _p50(opt, b):.2f}x faster |"
        )
    noise = rep["comparison"].get("noise") or {}
    lines += [
        "| noise control: p50 of a second copy of the original / the original | | | "
        + ", ".join(f"batch {b}: {v:.2f}" for b, v in noise.items())
        + " |",
        f"| fidelity: cosine min / mean, max abs error | | {fid['cosine_min']:.6f} / "
        f"{fid['cosine_mean']:.6f}, {fid['max_abs_error']:.4f} | |",
        "",
        "The same work as a hand-written script in a fresh process (quantize_dynamic, load both, "
        "time both interleaved, compare outputs), with ONNX Runtime's per-channel and its default "
        "(per-tensor) settings:",
        "",
        "| | wall time (s) | int8 size (MB) | p50 fp32 / int8, batch 1 (ms) | batch 32 (ms) "
        "| cosine min |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| ModelPress job (submit to finish) | {r['service']['wall_s']:.1f} | "
        f"{opt['size_bytes'] / 1e6:.1f} | {_p50(base, 1):.2f} / {_p50(opt, 1):.2f} | "
        f"{_p50(base, 32):.1f} / {_p50(opt, 32):.1f} | {fid['cosine_min']:.6f} |",
    ]
    for name, d in (
        ("script, per-channel", r["script_same_work"]),
        ("script, ORT defaults", r["ort_default_per_tensor"]),
    ):
        l1, l32 = d["latency"]["1"], d["latency"]["32"]
        lines.append(
            f"| {name} | {d['wall_s']:.1f} | {d['size'] / 1e6:.1f} | {l1['fp32']['p50']:.2f} / "
            f"{l1['int8']['p50']:.2f} | {l32['fp32']['p50']:.1f} / {l32['int8']['p50']:.1f} | "
            f"{d['fidelity']['cosine_min']:.6f} |"
        )
    lines += [
        "",
        "The job's wall time includes what the script does not do: a sandboxed child process, a "
        "noise-control copy, a separate peak-memory probe per model, fidelity at two input shapes, "
        "the report and the manifest. On random weights per-channel and per-tensor int8 are "
        "equally faithful; FIELD-NOTES.md measured the gap (0.961 vs 0.843 worst cosine) on real "
        "MiniLM weights, which is why per-channel is the default.",
        "",
        "## The classic example network (`examples/seed_network.py`)",
        "",
        "conv 3->64, conv 64->128 (ReLU + 2x2 max-pool each), fc 4608->1000, fc 1000->10 on "
        "3x24x24 inputs, trained 4 epochs on scikit-learn's digits (upscaled), uploaded as a "
        "torch.export `.pt2`; one job per row, accuracy on 360 held-out digits. The original runs "
        "in torch and every result in ONNX Runtime, so the `export to ONNX` row is the runtime's "
        "own share of each speed-up.",
        "",
        "| job | params | non-zero | size MB | zipped MB | speedup b1 | speedup b32 | accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["seed_network"]:
        if "error" in row:
            lines.append(f"| {row['job']} | failed: {row['error']} | | | | | | |")
            continue
        lines.append(
            f"| {row['job']} | {row['params']} | {row['nonzero']} | {row['size_MB']} | "
            f"{row['zipped_MB']} | {row['speedup_b1']:.2f}x | {row['speedup_b32']:.2f}x | "
            f"{row['accuracy']} |"
        )
    reads, mem = r["api_reads_ms"], r["upload_memory"]
    lines += [
        "",
        "## The service itself",
        "",
        f"- API reads (`GET /v1/jobs/{{id}}` and `GET /v1/jobs?limit=20` alternating, {reads['n']} "
        f"sequential requests, embedded SQLite): p50 {reads['p50']:.1f} ms, p99 "
        f"{reads['p99']:.1f} ms.",
        f"- Streaming upload: a {mem['upload_mb']} MB upload (read whole, then refused as unknown "
        f"bytes: {mem['status']}) left the API process at a peak resident set of "
        f"{mem['peak_mb']:.0f} MB ({mem['rss_before_mb']:.0f} MB before): the file goes to disk, "
        "not to memory.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--direct"]:
        result = _direct(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1")
        print(json.dumps(result, default=str))
    else:
        main()
