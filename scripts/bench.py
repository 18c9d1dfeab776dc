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

from worker.benchmark import compare_outputs, measure_latency  # noqa: E402

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
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    print(
        json.dumps(
            {
                "model_bytes": model.stat().st_size,
                "service": {
                    "wall_s": service["wall_s"],
                    "steps": service["report"]["steps"][0]["wall_s"],
                    "report": {
                        k: service["report"][k]
                        for k in ("baseline", "optimized", "comparison", "fidelity", "environment")
                    },
                },
                "script_same_work": ours_direct,
                "ort_default_per_tensor": ort_default,
                "api_reads_ms": reads,
                "upload_memory": memory,
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--direct"]:
        result = _direct(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1")
        print(json.dumps(result, default=str))
    else:
        main()
