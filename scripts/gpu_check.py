"""CUDA check of the job pipeline: the same job (channel pruning + distillation on digits, then
the report) run through `worker.pipeline.job.run_pipeline` with `device: cuda` and `device: cpu`.

    python scripts/gpu_check.py OUT_DIR

Needs torch with CUDA, onnx, onnxruntime, scikit-learn and pydantic(-settings); no database,
broker or server. Writes report-cuda.json, report-cpu.json and summary.json into OUT_DIR.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.pipeline.inspect import inspect_onnx
from worker.pipeline.run import run_pipeline
from worker.sandbox.protocol import ModelFile, SandboxRequest


class DigitsCnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 64, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(64, 128, 3, padding=1)
        self.fc = torch.nn.Linear(128 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def build(work: Path) -> None:
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    torch.manual_seed(0)
    model = DigitsCnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs, ys = torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400])
    for _ in range(6):
        for i in torch.randperm(1400).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[i]), ys[i]).backward()
            optimizer.step()
    torch.onnx.export(
        model.eval(),
        (xs[:2],),
        str(work / "model.onnx"),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
        opset_version=17,
    )
    np.savez(work / "train.npz", x=x[:1400], labels=y[:1400])
    np.savez(work / "test.npz", x=x[1400:], labels=y[1400:])


def run(work: Path, device: str) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix=f"job-{device}-"))
    (scratch / "input").mkdir()
    (scratch / "data").mkdir()
    shutil.copyfile(work / "model.onnx", scratch / "input/model.onnx")
    for name in ("train", "test"):
        shutil.copyfile(work / f"{name}.npz", scratch / f"data/{name}.npz")
    info = inspect_onnx(scratch / "input/model.onnx", 4)
    spec = {
        "model_id": "m",
        "device": device,
        "steps": [
            {"op": "prune", "method": "channel", "ratio": 0.5},
            {"op": "distill", "dataset_id": "train", "epochs": 20},
        ],
        "evaluation": {"dataset_id": "test", "metric": "accuracy"},
        "benchmark": {"batch_sizes": [1, 64], "iterations": 50},
    }
    request = SandboxRequest(
        kind="run",
        job_id=f"gpu-check-{device}",
        device=device,
        spec=spec,
        threads=4,
        model=ModelFile(
            path="input/model.onnx",
            format="onnx",
            inputs=info["inputs"],
            outputs=info["outputs"],
            public={"id": "m", "name": "digits", "format": "onnx", "sha256": "-"},
        ),
        datasets={"train": "data/train.npz", "test": "data/test.npz"},
    )
    started = time.perf_counter()
    run_pipeline(scratch, request)
    report = json.loads((scratch / "out/report.json").read_text())
    report["wall_s"] = time.perf_counter() - started
    return report


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    build(work)
    summary = {}
    for device in ("cuda", "cpu"):
        report = run(work, device)
        (out / f"report-{device}.json").write_text(json.dumps(report, indent=1))
        distill = report["steps"][-1]
        summary[device] = {
            "environment": {k: v for k, v in report["environment"].items() if k != "libraries"},
            "libraries": report["environment"]["libraries"],
            "job_wall_s": round(report["wall_s"], 2),
            "distill_device": distill["metrics"].get("device"),
            "distill_train_wall_s": distill["metrics"].get("train_wall_s"),
            "distill_before_after": [distill["metrics"].get(k) for k in ("before", "after")],
            "accuracy": report["accuracy"],
            "providers": [report["baseline"]["provider"], report["optimized"]["provider"]],
            "p50_ms": {
                k: {b: s["p50"] for b, s in report[k]["latency_ms"].items()}
                for k in ("baseline", "optimized")
            },
            "notes": report["verdict"]["notes"],
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    save_results(out, summary)


def save_results(out: Path, summary: dict) -> None:
    """Save the summary, with when, where and how it was measured, as docs/bench/gpu.json."""
    # BENCHMARKS.md's GPU section is rendered from that file (scripts/bench.py --render). It goes
    # to OUT_DIR/gpu.json too: where the checkout is a throwaway copy, OUT_DIR is what comes back.
    # Imported here: only this function needs them (the rest of the script is the check itself).
    import datetime
    import subprocess

    report = json.loads((out / "report-cuda.json").read_text())
    env = report["environment"]
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True)
        driver_version = driver.stdout.split()[0] if driver.stdout.split() else None
    except (OSError, subprocess.SubprocessError):
        driver_version = None  # the driver version is context, not a measurement: go on
    machine = {k: env.get(k) for k in ("gpu", "gpu_memory_bytes", "cpu_model", "cores")}
    doc = {
        "schema": 1,
        "source": {
            "script": "scripts/gpu_check.py",
            "command": " ".join(["python", "scripts/gpu_check.py", *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
            "machine": {**machine, "driver": driver_version},
            "pipeline": f"{run_pipeline.__module__}.{run_pipeline.__name__}",
        },
        "job": {
            "dataset": "scikit-learn's digits",
            "steps": [s["config"] for s in report["steps"] if not s.get("implicit")],
            "benchmark": {k: report["benchmark"][k] for k in ("batch_sizes", "iterations")},
        },
        "runs": summary,
    }
    text = json.dumps(doc, indent=1) + "\n"
    for path in (out / "gpu.json", Path(__file__).resolve().parent.parent / "docs/bench/gpu.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


if __name__ == "__main__":
    main()
