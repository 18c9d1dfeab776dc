"""`convert`: fp16 or bf16 ONNX models, checked on sample inputs before they are handed back.

fp16 uses onnxconverter-common's `convert_float_to_float16` with repairs found necessary here:
no weight clamping (its default silently clamps weights above 1e4; a weight beyond fp16's range
becomes inf instead, which the fallback or the finite check catches); an initializer shared by a
node kept in fp32 and a converted one is duplicated (the converter leaves both readers fp32, an
invalid graph); a Cast-to-fp16 straight into a Cast-to-fp32 is bypassed (it turns 1e5 into inf;
the converter removes such pairs only for single-consumer tensors); and outputs written by a node
kept in fp32 are cast back to fp32 (the converter leaves them fp16 despite `keep_io_types`).

Automatic fallback: the fp32 model runs on sample inputs with every intermediate tensor exposed,
and every node that reads or writes a value above `FP16_MAX / OVERFLOW_HEADROOM` (weights
included) stays fp32. Measured: ONNX Runtime's CPU provider computes fp16 nodes in fp32 (it
inserts casts and drops those between fp16 nodes), so on CPU an fp16 overflow shows only where a
value really is stored as fp16 (casts, fp16 weights and outputs); the range check also protects
fp16 hardware (CUDA), where intermediates are fp16.

bf16: ONNX Runtime's CPU provider has no bf16 kernel for MatMul, Gemm, Conv, Add, Mul, Relu or
Softmax (NOT_IMPLEMENTED; only Cast, Identity and LayerNormalization load), so a graph computing
in bf16 cannot run on CPU. `bf16` stores weights as bf16, each behind a Cast to fp32: half the
file, bf16-rounded weights, fp32 arithmetic, a model that runs everywhere.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from app.core.errors import JobFailure
from app.passes.convert import (
    ConvertConfig,
    ConvertTechnique,
)
from worker import onnx_io
from worker.ort import session as ort_session
from worker.passes.base import Pass, PassContext, PassResult
from worker.precision.bf16 import bf16_candidate, to_bf16
from worker.precision.fp16 import BF16, FLOAT, blocked_ops, name_nodes, overflowing_nodes, to_fp16

PROBE_BATCH = 2


CPU_FP16_WARNING = (
    "On CPUs without fp16 arithmetic (this one has none), ONNX Runtime computes fp16 nodes in "
    "fp32 behind inserted casts: fp16 halves the file but is not expected to be faster. The "
    "report's latency rows measure this model."
)


CRASH_WARNING = (
    "ONNX Runtime {version} crashed (SIGSEGV) loading the fp16 graph, a bug of its CPU "
    "optimizer with fp16 Transpose into MatMul; {count} Transpose node(s) feeding MatMul/Gemm "
    "stay fp32 to avoid it."
)


BF16_WARNING = (
    "bf16 here means bf16 storage: ONNX Runtime's CPU provider has no bf16 kernels for "
    "MatMul/Gemm/Conv/Add, so weights are stored as bf16 and cast to fp32 at load; arithmetic "
    "stays fp32 and latency does not change."
)


class ConvertPass(Pass[ConvertConfig]):
    technique = ConvertTechnique()

    def run(self, ctx: PassContext, config: ConvertConfig) -> PassResult:
        source = onnx_io.load_model(ctx.input_path)
        name_nodes(source)
        feeds = ctx.tools.example_inputs(PROBE_BATCH)
        probe = _probe(source, feeds, ctx.threads)
        out = ctx.work_dir / "converted.onnx"
        fallback: dict[str, float] = {}
        workaround: list[str] = []
        if config.precision == "fp16":
            fallback, workaround = _write_fp16(source, config, probe, out)
        else:
            onnx_io.save_model(to_bf16(source, config), out)
        try:  # a refused model is not left behind in the work directory
            got = _run_converted(out, feeds, ctx.threads, config.keep_io_types)
            names = [o.name for o in source.graph.output]
            fidelity = _compare([probe[n] for n in names], got, names)
        except JobFailure:
            out.unlink()
            raise
        blocked = {*config.node_block_list, *fallback, *workaround}
        converted, kept = _node_split(source, config, blocked, probe, out)
        metrics = {
            "precision": config.precision,
            "arithmetic": "fp16" if config.precision == "fp16" else "fp32",
            "nodes_converted": len(converted),
            "nodes_kept_fp32": len(kept),
            "kept_fp32_nodes": kept[:500],
            "fallback_nodes": dict(list(fallback.items())[:500]),
            "crash_workaround_nodes": workaround[:500],
            "size_bytes_before": ctx.input_path.stat().st_size,
            "size_bytes_after": out.stat().st_size,
            **fidelity,
        }
        return PassResult(out, "onnx", metrics, _notes(config, ctx.device, workaround))


def _notes(config: ConvertConfig, device: str, workaround: list[str]) -> list[str]:
    notes = [BF16_WARNING] if config.precision == "bf16" else []
    if config.precision == "fp16" and device == "cpu" and not _cpu_has_fp16():
        notes.append(CPU_FP16_WARNING)
    if workaround:
        notes.append(CRASH_WARNING.format(count=len(workaround), version=ort.__version__))
    return notes


def _write_fp16(
    source: Any, config: ConvertConfig, probe: dict[str, np.ndarray], out: Path
) -> tuple[dict[str, float], list[str]]:
    """Convert and save; where ONNX Runtime crashes loading the result, convert again with the
    Transposes that feed a MatMul/Gemm kept in fp32. Returns (fallback, workaround) nodes."""
    fallback = overflowing_nodes(source, probe) if config.auto_fallback else {}
    onnx_io.save_model(to_fp16(source, config, probe, set(fallback)), out)
    if _loads_in_child(out):
        return fallback, []
    workaround = _transposes_into_matmuls(source.graph)
    onnx_io.save_model(to_fp16(source, config, probe, {*fallback, *workaround}), out)
    if workaround and _loads_in_child(out):
        return fallback, workaround
    out.unlink()
    raise JobFailure(
        "conversion_failed",
        "ONNX Runtime crashes (SIGSEGV) creating a session on the fp16 model, a bug of its CPU "
        "graph optimizer; keep more nodes in fp32 (`op_block_list`, `node_block_list`).",
    )


def _loads_in_child(path: Path) -> bool:
    """Whether creating an ONNX Runtime session on `path` does not crash, tried in a child
    process so that a crash (ORT 1.32 segfaults on some fp16 graphs) cannot kill this one."""
    code = (
        "import sys, onnxruntime as o; "
        "o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, timeout=600, check=False
    )
    return done.returncode >= 0  # negative: killed by a signal; errors are reported later


def _transposes_into_matmuls(graph: Any) -> list[str]:
    producers = {o: n for n in graph.node for o in n.output}
    found = [
        producers[t].name
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm")
        for t in n.input[:2]
        if t in producers and producers[t].op_type == "Transpose"
    ]
    return sorted(set(found))


def _probe(source: Any, feeds: dict[str, Any], threads: int) -> dict[str, np.ndarray]:
    """Every top-level tensor of the fp32 model (intermediates included) on `feeds`."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    present = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in present:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    try:
        session = ort_session(model.SerializeToString(), threads)
        values = session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise JobFailure("conversion_failed", f"The fp32 model does not run: {exc}") from exc
    return dict(zip([o.name for o in session.get_outputs()], values, strict=True))


def _run_converted(path: Path, feeds: dict[str, Any], threads: int, keep_io: bool) -> list[Any]:
    try:
        session = ort_session(str(path), threads)
        if not keep_io:
            feeds = {
                k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feeds.items()
            }
        return list(session.run(None, feeds))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise JobFailure(
            "conversion_failed", f"The converted model does not run in ONNX Runtime: {exc}"
        ) from exc


def _compare(reference: list[Any], got: list[Any], names: list[str]) -> dict[str, Any]:
    """Max abs error and worst per-sample cosine; JobFailure where outputs became NaN/inf."""
    max_err, min_cos = 0.0, 1.0
    for name, ref, cand in zip(names, reference, got, strict=True):
        r, c = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
        broken = ~np.isfinite(c) & np.isfinite(r)
        if broken.any():
            raise JobFailure(
                "conversion_not_finite",
                f"Output {name!r} became NaN/inf on sample inputs after conversion "
                f"({int(broken.sum())} of {broken.size} values): keep the overflowing nodes in "
                "fp32 (`auto_fallback`, `node_block_list` or `op_block_list`).",
            )
        finite = np.isfinite(r)
        max_err = max(max_err, float(np.abs(r - c)[finite].max(initial=0.0)))
        rows = r.shape[0] if r.ndim > 1 else 1  # rank 0/1 outputs are one sample
        r2, c2 = (np.where(finite, a, 0).reshape(rows, -1) for a in (r, c))
        norms = np.linalg.norm(r2, axis=1) * np.linalg.norm(c2, axis=1)
        cos = (r2 * c2).sum(1)[norms > 0] / norms[norms > 0]
        min_cos = min(min_cos, float(cos.min(initial=1.0)))
    return {"max_abs_error": max_err, "min_cosine": min_cos}


def _node_split(
    source: Any, config: ConvertConfig, blocked: set[str], probe: dict[str, Any], out: Path
) -> tuple[list[str], list[str]]:
    """Original nodes converted and kept in fp32: for fp16 every node computing on floats, for
    bf16 every node reading a weight big enough to be stored as bf16."""
    ops = blocked_ops(config)
    if config.precision == "bf16":
        floats = {i.name for i in source.graph.initializer if bf16_candidate(i)}
        inits = onnx_io.load_model(out, load_data=False).graph.initializer
        bf16 = {i.name.removesuffix("__bf16") for i in inits if i.data_type == BF16}
    else:
        floats = {k for k, v in probe.items() if np.asarray(v).dtype.kind == "f"}
        floats |= {i.name for i in source.graph.initializer if i.data_type == FLOAT}
    done: list[str] = []
    kept: list[str] = []
    for node in source.graph.node:
        if not {*node.input, *node.output} & floats:
            continue
        is_kept = node.op_type in ops or node.name in blocked
        if config.precision == "bf16":
            is_kept = not set(node.input) & bf16
        (kept if is_kept else done).append(node.name)
    return done, kept


def _cpu_has_fp16() -> bool:
    """Whether this CPU advertises fp16 arithmetic (x86 AVX512-FP16, Arm FP16 extensions)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return bool({"avx512_fp16", "asimdhp", "fphp"} & set(flags))
