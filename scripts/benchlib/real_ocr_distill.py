"""Channel pruning, then distillation, of the PP-OCRv4 detector as ModelPress jobs (issue #9): a
real third-party mobile CNN (depthwise convs, SE blocks with HardSigmoid, Resize, ConvTranspose,
dynamic height and width, every weight a Constant node).

Two jobs on the same upload: `prune` (channel, L1, `ratio` 0.3, kept channels rounded up to
multiples of 8) alone, and followed by `distill` (teacher: the upload; MSE to its probability
maps) on rendered pages at `train_side` x `train_side`, the package's own preprocessing with that
side limit, so that training takes minutes on 2 cores. The three files are then measured side by
side: parameters (Constant weights counted), p50 latency at batch 1 on the 640 x 640 evaluation
pages, and each page's map cosine to fp32's, on held-out pages at the training size (seeds apart
from the training pages) and on the 640 x 640 evaluation pages (a size it was not trained at).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchlib import real_jobs, real_ocr

PRUNED = "ModelPress: prune channel 0.3"
DISTILLED = "ModelPress: prune channel 0.3, then distill"
CONFIG: dict[str, Any] = {
    "ratio": 0.3,
    "train_side": 320,
    "train_images": 64,  # validation_split 0.2 of them held out by the step itself
    "held_out_images": 16,
    "train_seeds_from": 2000,  # calibration pages are seeds 0.., evaluation pages 1000..
    "held_out_seeds_from": 3000,
    "epochs": 4,
    "batch_size": 8,
    "lr": 1e-3,
}


def pages(fp32: Path, tmp: Path) -> np.ndarray:
    """Training pages (x only) and held-out pages (x, labels: fp32's maps) saved as datasets;
    returns the held-out pages."""
    side, start = CONFIG["train_side"], CONFIG["train_seeds_from"]
    train = real_ocr.images(range(start, start + CONFIG["train_images"]), side)
    start = CONFIG["held_out_seeds_from"]
    held = real_ocr.images(range(start, start + CONFIG["held_out_images"]), side)
    session = real_jobs.sessions({"x": fp32}, real_ocr.CONFIG["threads"])["x"]
    np.savez(tmp / "ocr_distill_train.npz", x=train)
    np.savez(tmp / "ocr_distill_held_out.npz", x=held, labels=real_ocr.maps(session, held))
    return held


def _spec(model_id: str, steps: list[dict[str, Any]], eval_id: str) -> dict[str, Any]:
    """A job: the steps, the held-out pages as its evaluation (metric `cosine`), and its own
    benchmark at batch 1 on 640 x 640 inputs."""
    return {
        "model_id": model_id,
        "steps": steps,
        "evaluation": {"dataset_id": eval_id, "metric": "cosine"},
        "benchmark": {
            "batch_sizes": [1],
            "iterations": real_ocr.CONFIG["iterations"],
            "input_shapes": {"x": [1, 3, *real_ocr.CONFIG["image"]]},
        },
    }


def jobs(client: httpx.Client, fp32: Path, tmp: Path) -> dict[str, dict[str, Any]]:
    """The pruning job and the pruning + distillation job, each with its file's path."""
    model_id = real_jobs.upload(client, "/v1/models", fp32)
    train_id = real_jobs.upload(client, "/v1/datasets", tmp / "ocr_distill_train.npz")
    eval_id = real_jobs.upload(client, "/v1/datasets", tmp / "ocr_distill_held_out.npz")
    prune = {"op": "prune", "method": "channel", "ratio": CONFIG["ratio"]}
    distill = {"op": "distill", "dataset_id": train_id}
    distill |= {k: CONFIG[k] for k in ("epochs", "batch_size", "lr")}
    made = {}
    for name, steps, file in [
        (PRUNED, [prune], "ocr_pruned.onnx"),
        (DISTILLED, [prune, distill], "ocr_pruned_distilled.onnx"),
    ]:
        made[name] = real_jobs.run_job(client, _spec(model_id, steps, eval_id), tmp / file)
        made[name]["path"] = tmp / file
    return made


def parameters(path: Path) -> int:
    """Weights of the file, Constant nodes included (the job report counts initializers only,
    which gives 0 for this paddle2onnx export)."""
    import onnx

    from worker.channels.rewrite import parameter_count

    return parameter_count(onnx.load(str(path)))


def measure(
    fp32: Path, paths: dict[str, Path], evaluation: np.ndarray, held: np.ndarray
) -> dict[str, Any]:
    """real_ocr.measure's rows (latency at 640, fidelity on the 640 evaluation pages), each with
    its parameters and its fidelity on the held-out pages at the training size."""
    measured = real_ocr.measure(fp32, paths, evaluation)
    files = {"fp32": fp32, **paths}
    opened = real_jobs.sessions(files, real_ocr.CONFIG["threads"])
    reference = real_ocr.maps(opened["fp32"], held)
    for name, row in measured["rows"].items():
        key = name if name in files else "fp32"  # the noise control is fp32's file
        row["parameters"] = parameters(files[key])
        row["held_out"] = real_ocr.fidelity(reference, real_ocr.maps(opened[key], held))
    return measured


def run(client: httpx.Client, fp32: Path, evaluation: np.ndarray, tmp: Path) -> dict[str, Any]:
    """Pages, both jobs, the side-by-side measurement."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    held = pages(fp32, tmp)
    timings["pages"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    made = jobs(client, fp32, tmp)
    timings["jobs"] = round(time.perf_counter() - started, 1)
    paths = {k: v["path"] for k, v in made.items() if v["status"] == "succeeded"}
    started = time.perf_counter()
    measured = measure(fp32, paths, evaluation, held)
    timings["side_by_side"] = round(time.perf_counter() - started, 1)
    side = CONFIG["train_side"]
    return {
        "config": CONFIG,
        "inputs": {
            "train_and_held_out_shape": list(held.shape[1:]),
            "evaluation_pages": len(evaluation),
            "preprocessing": f"rapidocr_onnxruntime's DetPreProcess({side}, 'max') on BGR pixels",
        },
        "jobs": {k: {x: y for x, y in v.items() if x != "path"} for k, v in made.items()},
        "measured": measured,
        "timings_s": timings,
    }
