"""The classic example network (examples/seed_network.py) through its four jobs."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np

from app.client import Client
from benchlib import ROOT

# What the seed table needs of each job's report.
REPORT_KEYS = ("baseline", "optimized", "comparison", "accuracy", "steps", "benchmark")


class Recording(Client):
    """The example's client, keeping every report it fetches for the record."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reports: list[dict[str, Any]] = []

    def get(self, path: str, **params: Any) -> Any:
        """GET, and keep the body when it is a job's report."""
        body = super().get(path, **params)
        if path.endswith("/report"):
            self.reports.append({k: body.get(k) for k in REPORT_KEYS})
        return body


def load_example() -> ModuleType:
    """examples/seed_network.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("seed", ROOT / "examples" / "seed_network.py")
    assert spec and spec.loader
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    return seed


def describe(model: Any, x_train: np.ndarray, x_test: np.ndarray, epochs: int) -> dict[str, Any]:
    """The network's layers and the data it was trained on, read off the objects themselves."""
    import torch

    layers = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            layers.append(f"conv {module.in_channels}->{module.out_channels}")
        elif isinstance(module, torch.nn.Linear):
            layers.append(f"fc {module.in_features}->{module.out_features}")
    return {
        "layers": layers,
        "input_shape": list(x_train.shape[1:]),
        "epochs": epochs,
        "train_samples": len(x_train),
        "test_samples": len(x_test),
    }


def seed_network(client: httpx.Client, tmp: Path) -> dict[str, Any]:
    """Train the example network, upload it and its data, run the example's jobs."""
    import torch

    seed = load_example()
    x_train, y_train, x_test, y_test = seed.digits()
    # The example's own default, passed explicitly so the record says what was trained.
    epochs = inspect.signature(seed.train).parameters["epochs"].default
    model = seed.train(x_train, y_train, epochs=epochs)
    dims = {"x": {0: torch.export.Dim("batch", max=4096)}}
    program = torch.export.export(model, (torch.from_numpy(x_train[:2]),), dynamic_shapes=dims)
    torch.export.save(program, tmp / "seed.pt2")
    np.savez(tmp / "train.npz", x=x_train, labels=y_train)
    np.savez(tmp / "test.npz", x=x_test, labels=y_test)

    api = Recording(str(client.base_url))
    model_id = api.wait_model(api.upload("/v1/models", tmp / "seed.pt2")["id"])["id"]
    train_id = api.upload("/v1/datasets", tmp / "train.npz")["id"]
    test_id = api.upload("/v1/datasets", tmp / "test.npz")["id"]
    rows = seed.run(api, model_id, train_id, test_id)
    reports = iter(api.reports)
    jobs = [
        {"job": r["job"], "status": r["status"], "error": r["error"]}
        if "error" in r
        else {"job": r["job"], "report": next(reports)}
        for r in rows
    ]
    return {"config": describe(model, x_train, x_test, epochs), "jobs": jobs}
