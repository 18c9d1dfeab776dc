"""The PP-OCRv4 text detector shipped in the PyPI package rapidocr_onnxruntime (a real mobile CNN:
depthwise convs, SE blocks with HardSigmoid, Resize, ConvTranspose): fp32, ONNX Runtime's
`quantize_static` called directly, and a ModelPress static int8 job, measured side by side at
batch 1 on 640 x 640 pages (through the package's own preprocessing class).

The images are rendered here with PIL (lines of real sentences in DejaVu fonts on paper-like or
dark backgrounds, with boxes, rules, noise and blur): synthetic, but text as a detector sees it.
Calibration and evaluation images are drawn from different seeds. Then channel pruning and
pruning + distillation of the same detector (real_ocr_distill.py), saved as `prune_distill`.
"""

from __future__ import annotations

import random
import re
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchlib import real_jobs
from benchlib.real_minilm import sentences

PACKAGES = {"rapidocr_onnxruntime": "rapidocr_onnxruntime", "PIL": "pillow", "cv2": "opencv-python"}
MODEL = "models/ch_PP-OCRv4_det_infer.onnx"
DIRECT = "direct: quantize_static QDQ per-channel"
JOB = "ModelPress: static int8, keep_float auto"
FALLBACK = "ModelPress: the same, calibration_samples 8"
FONTS = Path("/usr/share/fonts/truetype/dejavu")
CONFIG: dict[str, Any] = {
    "image": [640, 640],
    # DetPreProcess(limit_side_len, limit_type): 640 "max" keeps a 640 x 640 page as it is. The
    # package's default (736 "min") upscales it to 736 x 736, where a ModelPress job fails: its
    # fidelity check at half the size (368) breaks the detector's stride-32 rule.
    "preprocess": [640, "max"],
    "calibration_images": 32,
    "evaluation_images": 16,
    "iterations": 20,
    "latency_budget_s": 120,
    "threads": 2,
    "min_cosine": 0.98,
    "fallback_calibration_samples": 8,  # only if the job as specified runs out of memory
    "text_threshold": 0.3,  # the package's own `thresh` for the probability map
}


def model_path() -> Path:
    return real_jobs.package_dir("rapidocr_onnxruntime") / MODEL


def _font(rng: random.Random, size: int) -> Any:
    from PIL import ImageFont

    fonts = sorted(FONTS.glob("DejaVu*.ttf")) if FONTS.is_dir() else []
    if not fonts:  # Pillow's own scalable font (Pillow >= 10.1)
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(rng.choice(fonts)), size)


def render(seed: int, texts: list[str]) -> Any:
    """One RGB page: lines of text at random sizes and places, boxes and rules, noise, blur."""
    from PIL import Image, ImageDraw, ImageFilter

    rng, (h, w) = random.Random(seed), CONFIG["image"]
    dark = rng.random() < 0.2
    paper = [rng.randint(20, 70) if dark else rng.randint(200, 255) for _ in range(3)]
    page = Image.new("RGB", (w, h), tuple(paper))
    draw = ImageDraw.Draw(page)
    for _ in range(rng.randint(0, 3)):  # table cells, underlines, frames
        x, y = rng.randint(0, w - 60), rng.randint(0, h - 30)
        shade = tuple(rng.randint(90, 180) for _ in range(3))
        draw.rectangle([x, y, x + rng.randint(40, 300), y + rng.randint(20, 160)], outline=shade)
    y = rng.randint(5, 40)
    while y < h - 20:
        size = rng.randint(14, 44)
        ink = tuple(rng.randint(200, 255) if dark else rng.randint(0, 90) for _ in range(3))
        words = rng.choice(texts).split()
        start = rng.randrange(len(words))
        line = " ".join(words[start : start + rng.randint(1, 8)])
        draw.text((rng.randint(5, w // 3), y), line, fill=ink, font=_font(rng, size))
        y += int(size * rng.uniform(1.3, 2.6))
    pixels = np.asarray(page, dtype=np.float32)
    pixels += np.random.default_rng(seed).normal(0, rng.uniform(2, 10), pixels.shape)
    page = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return page.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def images(seeds: range, side: int | None = None) -> np.ndarray:
    """Rendered pages through the package's own detector preprocessing, as one NCHW batch;
    `side` replaces CONFIG's side limit (a 640 page comes out `side` x `side`)."""
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    texts = sentences()
    # The package's mean/std (0.5) on BGR pixels as its image loader gives them; the size rule
    # is CONFIG's (see there).
    limit, kind = CONFIG["preprocess"]
    prep = DetPreProcess(side or limit, kind, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    return np.concatenate([prep(np.asarray(render(s, texts))[:, :, ::-1]) for s in seeds])


class Reader:
    """ONNX Runtime's calibration reader protocol, one image per call (as a script writes it)."""

    def __init__(self, name: str, batch: np.ndarray) -> None:
        self.items = iter([{name: x[None]} for x in batch])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def _attempt(attempts: list[dict[str, Any]], what: str, func: Any, *args: Any, **kw: Any) -> bool:
    """Call func, recording whether it worked and, if not, the error it raised."""
    started = time.perf_counter()
    try:
        func(*args, **kw)
    except Exception as exc:  # a refusal is a finding: it goes into the record
        # Scratch folders out of the record: the file's own name is enough.
        error = re.sub(r"/\S*/([^/\s]+\.onnx)", r"\1", f"{type(exc).__name__}: {exc}")[:1500]
        attempts.append({"step": what, "ok": False, "error": error})
        return False
    attempts.append({"step": what, "ok": True, "wall_s": round(time.perf_counter() - started, 1)})
    return True


def _convert(source: Path, out: Path, opset: int) -> None:
    import onnx

    onnx.save(onnx.version_converter.convert_version(onnx.load(str(source)), opset), str(out))


def direct_static(fp32: Path, calibration: np.ndarray, tmp: Path) -> dict[str, Any]:
    """quant_pre_process then quantize_static (QDQ, per-channel, ORT's other defaults), as a
    script would; each refusal recorded, then the obvious fix (skip symbolic shapes, opset 13)."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    attempts: list[dict[str, Any]] = []
    out = tmp / "ocr_direct.onnx"
    for opset in (None, 13):
        source, pre = fp32, tmp / "ocr_pre.onnx"
        if opset is not None:
            source = tmp / f"ocr_opset{opset}.onnx"
            what = f"onnx.version_converter to opset {opset}"
            if not _attempt(attempts, what, _convert, fp32, source, opset):
                break
        if not _attempt(attempts, "quant_pre_process", quant_pre_process, str(source), str(pre)):
            what = "quant_pre_process(skip_symbolic_shape=True)"
            skip = {"skip_symbolic_shape": True}
            if not _attempt(attempts, what, quant_pre_process, str(source), str(pre), **skip):
                pre = source
        reader = Reader("x", calibration)
        what = "quantize_static(QDQ, per_channel=True)"
        kwargs = {"quant_format": QuantFormat.QDQ, "per_channel": True}
        if not _attempt(attempts, what, quantize_static, str(pre), str(out), reader, **kwargs):
            continue
        # quantize_static may write a file that ONNX Runtime then refuses to load: try it.
        opened = partial(real_jobs.sessions, {"x": out}, CONFIG["threads"])
        if _attempt(attempts, "load the result in ONNX Runtime", opened):
            return {"path": out, "attempts": attempts}
    return {"path": None, "attempts": attempts}


def service_jobs(
    client: httpx.Client, fp32: Path, shape: list[int], tmp: Path
) -> dict[str, dict[str, Any]]:
    """The ModelPress job: static int8 with `keep_float: auto` at min_cosine, evaluated on the
    evaluation pages (labels: fp32's maps, `cosine` metric). If it runs out of memory, the same
    step again with fewer calibration samples (smaller calibration batches), as a user would."""
    model_id = real_jobs.upload(client, "/v1/models", fp32)
    cal_id = real_jobs.upload(client, "/v1/datasets", tmp / "ocr_calibration.npz")
    eval_id = real_jobs.upload(client, "/v1/datasets", tmp / "ocr_evaluation.npz")
    step = {"op": "quantize", "mode": "static", "calibration_dataset_id": cal_id}
    spec = {
        "model_id": model_id,
        "steps": [{**step, "keep_float": "auto"}],
        "constraints": {"min_cosine": CONFIG["min_cosine"]},
        "evaluation": {"dataset_id": eval_id, "metric": "cosine"},
        "benchmark": {
            "batch_sizes": [1],
            "iterations": CONFIG["iterations"],
            "input_shapes": {"x": [1, *shape]},
        },
    }
    jobs = {JOB: real_jobs.run_job(client, spec, tmp / "ocr_job.onnx")}
    jobs[JOB]["path"] = tmp / "ocr_job.onnx"
    if (jobs[JOB].get("error") or {}).get("code") == "resource_exhausted":
        samples = CONFIG["fallback_calibration_samples"]
        retry = {**spec, "steps": [{**spec["steps"][0], "calibration_samples": samples}]}
        jobs[FALLBACK] = real_jobs.run_job(client, retry, tmp / "ocr_job2.onnx")
        jobs[FALLBACK]["path"] = tmp / "ocr_job2.onnx"
    return jobs


def maps(session: Any, batch: np.ndarray) -> np.ndarray:
    """The probability maps, one image per call (batch 1, as the package runs the detector)."""
    return np.concatenate([session.run(None, {"x": x[None]})[0] for x in batch])


def fidelity(reference: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Per image: the map's cosine to fp32's, and the IoU of the text mask at the threshold."""
    a, b = reference.reshape(len(reference), -1), got.reshape(len(got), -1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    ta, tb = a > CONFIG["text_threshold"], b > CONFIG["text_threshold"]
    iou = (ta & tb).sum(1) / np.maximum((ta | tb).sum(1), 1)
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "mask_iou_mean": float(iou.mean()),
        "mask_iou_min": float(iou.min()),
        "max_abs_error": float(np.abs(a - b).max()),
    }


def measure(fp32: Path, paths: dict[str, Path], evaluation: np.ndarray) -> dict[str, Any]:
    """Every file timed interleaved at batch 1 (a second fp32 session as noise control), then
    every file's maps of the evaluation pages compared with fp32's."""
    files = {"fp32": fp32, "fp32, second session (noise control)": fp32, **paths}
    opened = real_jobs.sessions(files, CONFIG["threads"])
    load = real_jobs.load_now()
    feeds = {"x": evaluation[:1]}
    lat = real_jobs.interleaved_p50(opened, feeds, CONFIG["iterations"], CONFIG["latency_budget_s"])
    reference = maps(opened["fp32"], evaluation)
    rows = {}
    for name, session in opened.items():
        rows[name] = {"size_bytes": files[name].stat().st_size, "latency_ms": lat[name]}
        rows[name]["sha256"] = real_jobs.sha256(files[name])
        rows[name] |= fidelity(reference, maps(session, evaluation))
    return {"load_average_1min_before": load, "rows": rows}


def describe_model(path: Path) -> dict[str, Any]:
    """Opset, input, op counts (depthwise convs apart) and weights of the shipped detector."""
    import onnx

    model = onnx.load(str(path))
    ops: dict[str, int] = {}
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        kind = "Conv (depthwise)" if node.op_type == "Conv" and group > 1 else node.op_type
        ops[kind] = ops.get(kind, 0) + 1
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return {
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "input": [model.graph.input[0].name, [d.dim_value or d.dim_param for d in dims]],
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "initializers": len(model.graph.initializer),
    }


def run(client: httpx.Client, tmp: Path) -> dict[str, Any]:
    """The whole detector measurement: pages, direct quantization, the job, side by side."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    fp32 = model_path()
    n_cal, n_eval = CONFIG["calibration_images"], CONFIG["evaluation_images"]
    calibration, evaluation = images(range(n_cal)), images(range(1000, 1000 + n_eval))
    labels = maps(real_jobs.sessions({"x": fp32}, CONFIG["threads"])["x"], evaluation)
    np.savez(tmp / "ocr_calibration.npz", x=calibration)
    np.savez(tmp / "ocr_evaluation.npz", x=evaluation, labels=labels)
    made = direct_static(fp32, calibration, tmp)
    timings["images_and_direct"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    jobs = service_jobs(client, fp32, list(calibration.shape[1:]), tmp)
    timings["jobs"] = round(time.perf_counter() - started, 1)
    paths = {DIRECT: made["path"]} if made["path"] else {}
    paths |= {k: v["path"] for k, v in jobs.items() if v["status"] == "succeeded"}
    started = time.perf_counter()
    measured = measure(fp32, paths, evaluation)
    timings["side_by_side"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    pruned = _prune_distill(client, fp32, evaluation, tmp)
    timings["prune_distill"] = round(time.perf_counter() - started, 1)
    return {
        "package": real_jobs.describe_package("rapidocr_onnxruntime", "rapidocr_onnxruntime"),
        "model": {"file": MODEL, **describe_model(fp32)},
        "config": CONFIG,
        "inputs": {
            "shape": list(calibration.shape[1:]),
            "rendered_with": "PIL, DejaVu fonts" if FONTS.is_dir() else "PIL, Pillow's font",
            "preprocessing": "rapidocr_onnxruntime's DetPreProcess({}, '{}') on BGR pixels".format(
                *CONFIG["preprocess"]
            ),
        },
        "direct": {"attempts": made["attempts"], "produced": made["path"] is not None},
        "jobs": {k: {x: y for x, y in v.items() if x != "path"} for k, v in jobs.items()},
        "measured": measured,
        "prune_distill": pruned,
        "timings_s": timings,
    }


def _prune_distill(
    client: httpx.Client, fp32: Path, evaluation: np.ndarray, tmp: Path
) -> dict[str, Any]:
    """Channel pruning, then distillation, of the same detector (real_ocr_distill.py; imported
    here because it builds on this module)."""
    from benchlib import real_ocr_distill

    return real_ocr_distill.run(client, fp32, evaluation, tmp)
