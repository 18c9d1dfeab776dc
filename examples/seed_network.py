"""The classic example network through ModelPress, end to end, against a running server.

    make run                                  # in one terminal
    .venv/bin/python examples/seed_network.py # in another (MODELPRESS_URL to point elsewhere)
    .venv/bin/python examples/seed_network.py --save DIR  # only write the model and datasets


The network: conv 3->64, conv 64->128 (each ReLU + 2x2 max-pool), fc 128*6*6 -> 1000,
fc 1000 -> 10, on 3x24x24 inputs. It is trained for a few epochs on scikit-learn's bundled
digits (8x8 images upsampled to 24x24, three channels), saved as a torch.export program, and
sent through four jobs: magnitude pruning, channel pruning + distillation, static int8, and export.
Each job's report says what the step achieved, measured; this script prints a summary table.
With `--save DIR` it only trains and writes `seed.pt2`, the same program as `seed.onnx`,
`train.npz` and `test.npz` into DIR (no server needed): the model of the README's five-minute
tour and of examples/walkthrough.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.client import Client


class SeedNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = torch.nn.Linear(128 * 6 * 6, 1000)
        self.fc2 = torch.nn.Linear(1000, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    images = np.repeat(np.repeat(images, 3, axis=1), 3, axis=2)  # 8x8 -> 24x24
    images = np.repeat(images[:, None], 3, axis=1)  # three channels
    split = int(0.8 * len(images))
    return images[:split], data.target[:split], images[split:], data.target[split:]


def train(x: np.ndarray, y: np.ndarray, epochs: int = 4) -> SeedNet:
    torch.manual_seed(0)
    model = SeedNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for i in torch.randperm(len(xs)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[i]), ys[i]).backward()
            optimizer.step()
    return model.eval()


JOBS: dict[str, list[dict[str, Any]]] = {
    "magnitude pruning 80%": [{"op": "prune", "method": "magnitude", "sparsity": 0.8}],
    "channel pruning 50% + distillation": [
        {"op": "prune", "method": "channel", "ratio": 0.5},
        {"op": "distill", "dataset_id": "TRAIN", "epochs": 5},
    ],
    "static int8": [{"op": "quantize", "mode": "static", "calibration_dataset_id": "TRAIN"}],
    "export to ONNX": [{"op": "export", "format": "onnx"}],
}


def run(client: Client, model_id: str, train_id: str, test_id: str) -> list[dict[str, Any]]:
    rows = []
    for name, steps in JOBS.items():
        steps = json.loads(json.dumps(steps).replace('"TRAIN"', json.dumps(train_id)))
        spec = {
            "model_id": model_id,
            "steps": steps,
            "evaluation": {"dataset_id": test_id, "metric": "accuracy"},
            "benchmark": {"batch_sizes": [1, 32], "iterations": 30},
        }
        job = client.wait_job(client.submit(spec)["id"])
        if job["status"] != "succeeded":
            rows.append({"job": name, "status": job["status"], "error": job["error"]})
            continue
        report = client.get(f"/v1/jobs/{job['id']}/report")
        rows.append(summary(name, report))
    return rows


def summary(name: str, report: dict[str, Any]) -> dict[str, Any]:
    base, opt, accuracy = report["baseline"], report["optimized"], report["accuracy"]
    return {
        "job": name,
        "format": opt["format"],
        "params": f"{base['parameters']} -> {opt['parameters']}",
        "nonzero": f"{base['nonzero_parameters']} -> {opt['nonzero_parameters']}",
        "size_MB": f"{base['size_bytes'] / 1e6:.2f} -> {opt['size_bytes'] / 1e6:.2f}",
        "zipped_MB": f"{base['compressed_size_bytes'] / 1e6:.2f} -> "
        f"{opt['compressed_size_bytes'] / 1e6:.2f}",
        "speedup_b1": report["comparison"]["speedup"].get("1"),
        "speedup_b32": report["comparison"]["speedup"].get("32"),
        "accuracy": f"{accuracy['baseline']:.4f} -> {accuracy['optimized']:.4f}",
        "steps": [(s["op"], s["wall_s"]) for s in report["steps"]],
    }


def save(work: Path, epochs: int = 4, onnx: bool = False) -> Path:
    """Train the network and write `seed.pt2` (and with `onnx` the same program exported as
    `seed.onnx`), `train.npz` and `test.npz` into `work`."""
    x_train, y_train, x_test, y_test = digits()
    model = train(x_train, y_train, epochs)
    work.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(
        model,
        (torch.from_numpy(x_train[:2]),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", max=4096)}},
    )
    torch.export.save(program, work / "seed.pt2")
    if onnx:
        torch.onnx.export(program, f=work / "seed.onnx", dynamo=True, external_data=False)
    np.savez(work / "train.npz", x=x_train, labels=y_train)
    np.savez(work / "test.npz", x=x_test, labels=y_test)
    return work / "seed.pt2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", type=Path, help="only write the model and datasets here")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    if args.save:
        for path in sorted(save(args.save, args.epochs, onnx=True).parent.glob("*")):
            print(path)
        return
    work = Path(tempfile.mkdtemp(prefix="seed-"))
    save(work, args.epochs)
    client = Client(
        os.environ.get("MODELPRESS_URL", "http://127.0.0.1:8000"),
        os.environ.get("MODELPRESS_API_KEY"),
    )
    model_id = client.wait_model(client.upload("/v1/models", work / "seed.pt2")["id"])["id"]
    train_id = client.upload("/v1/datasets", work / "train.npz")["id"]
    test_id = client.upload("/v1/datasets", work / "test.npz")["id"]
    for row in run(client, model_id, train_id, test_id):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
