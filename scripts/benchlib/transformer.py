"""Dynamic int8 on a transformer encoder: a ModelPress job vs the same work in a plain script."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchlib import ROOT

# The encoder and the benchmark settings; render() describes the network from this record.
CONFIG: dict[str, Any] = {
    "vocab": 30522,
    "width": 256,
    "heads": 4,
    "ffn": 1024,
    "layers": 4,
    "sequence": 128,
    "batch_sizes": [1, 32],
    "iterations": 20,
}
# What the report keeps of the job (the rest is logs and artifacts' bookkeeping).
REPORT_KEYS = ("baseline", "optimized", "comparison", "fidelity", "environment", "steps")


def build_transformer(path: Path) -> Path:
    """A BERT-sized-vocabulary encoder with random weights, exported to one ONNX file."""
    import torch

    c = CONFIG

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(c["vocab"], c["width"])
            layer = torch.nn.TransformerEncoderLayer(
                c["width"], c["heads"], c["ffn"], dropout=0.0, batch_first=True
            )
            self.encoder = torch.nn.TransformerEncoder(
                layer, c["layers"], enable_nested_tensor=False
            )

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.encoder(self.embed(input_ids)).mean(1)

    torch.manual_seed(0)
    dims = {0: torch.export.Dim("batch", max=1024), 1: torch.export.Dim("sequence", max=512)}
    torch.onnx.export(
        Encoder().eval(),
        (torch.randint(0, c["vocab"], (2, 16)),),
        str(path),
        dynamic_shapes={"input_ids": dims},
        external_data=False,
        verbose=False,
    )
    return path


def service_job(client: httpx.Client, model: Path) -> dict[str, Any]:
    """Upload the model, quantize it with default settings, time submit to finish."""
    with model.open("rb") as fh:
        m = client.post("/v1/models?wait=true", files={"file": (model.name, fh)}).json()
    spec = {
        "model_id": m["id"],
        "steps": [{"op": "quantize"}],
        "benchmark": {
            "batch_sizes": CONFIG["batch_sizes"],
            "iterations": CONFIG["iterations"],
            "input_shapes": {"input_ids": [1, CONFIG["sequence"]]},
        },
    }
    started = time.perf_counter()
    job = client.post("/v1/jobs", json=spec).json()
    while (body := client.get(f"/v1/jobs/{job['id']}").json())["status"] in ("queued", "running"):
        time.sleep(0.2)
    wall = time.perf_counter() - started
    assert body["status"] == "succeeded", body
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    kept = {k: report[k] for k in REPORT_KEYS}
    return {"wall_s": wall, "job_id": job["id"], "spec": spec, "report": kept}


def direct_script(bench_py: Path, model: Path, out: Path, per_channel: bool) -> dict[str, Any]:
    """The same work by hand, in a fresh process of its own (like a user's script, and away
    from this process's torch threads): quantize, load both, time both, compare outputs."""
    argv = [sys.executable, str(bench_py), "--direct", str(model), str(out), str(int(per_channel))]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_direct(model: Path, out: Path, per_channel: bool) -> dict[str, Any]:
    """The child side of direct_script(): what a hand-written script would do."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from worker.measure.benchmark import Runner, compare_outputs, measure_latency

    started = time.perf_counter()
    # ONNX Runtime's defaults, as a hand-written script would call it (per_channel aside).
    quantize_dynamic(str(model), str(out), per_channel=per_channel, weight_type=QuantType.QInt8)
    sessions = {k: ort.InferenceSession(str(p)) for k, p in (("fp32", model), ("int8", out))}
    rng = np.random.default_rng(0)
    vocab, seq = CONFIG["vocab"], CONFIG["sequence"]
    latency = {}
    for batch in CONFIG["batch_sizes"]:
        feeds = {"input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64)}
        runners: dict[str, Runner] = {k: partial(s.run, None) for k, s in sessions.items()}
        latency[str(batch)] = measure_latency(
            runners, feeds, iterations=CONFIG["iterations"], time_budget_s=60
        )
    feeds = {"input_ids": rng.integers(0, vocab, (max(CONFIG["batch_sizes"]), seq), dtype=np.int64)}
    fid = compare_outputs(
        sessions["fp32"].run(None, feeds), sessions["int8"].run(None, feeds), ["out"]
    )
    return {
        "per_channel": per_channel,
        "wall_s": time.perf_counter() - started,
        "latency": latency,
        "fidelity": fid["out"],
        "size": out.stat().st_size,
    }
