"""A real ONNX model over 2 GB through the real service, end to end (`scripts/bench.py --large`,
saved in docs/bench/large.json).

The model is a Llama-architecture decoder (transformers' LlamaConfig shaped like TinyLlama-1.1B:
hidden 2048, 32 heads, 4 key-value heads, intermediate 5632, vocabulary 32000, but 10 layers,
untied lm_head) with RANDOM, UNTRAINED weights (transformers' initialisation, seed 0): this
measures size handling, memory and wall time, not accuracy. It is exported in a child process
with the TorchScript exporter (`torch.onnx.export(dynamo=False)`, as real_llm.py does;
`input_ids` + `attention_mask` -> `logits`, no KV cache), its weights then gathered into one
external data file (`model.onnx` + `model.onnx.data`, ~2.3 GB fp32), and the child's peak RSS
recorded. The two files are zipped (stored, streamed) and uploaded through the API of
`modelpress run` (API + embedded worker, SQLite, a private data dir and port), once with the
default upload limit (MODELPRESS_MAX_UPLOAD_BYTES: 2 GiB, under the archive, when the saved run
was measured; 4 GiB since) and once with the limit set to 4 GiB. Jobs then run on it one by
one with a small benchmark (batch 1, 16 tokens, few iterations, no noise-control copy, no
memory probes, 2 threads): `optimize` (its result stays over the 1.8 GB external-data
threshold, so it comes back as `model.zip`), 4-bit weight-only and dynamic int8 `quantize`
(single `.onnx` results). Each downloaded artifact is unzipped where it is a zip, opened in ONNX
Runtime and run on the reference input; its logits are compared with PyTorch's (the export's own
reference). The resident memory of the service's processes (the API, the embedded worker, each
job's sandbox child) is sampled from /proc during the upload and each job. Every temporary file
lives under /tmp/large_bench, deleted at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchlib import ROOT, service
from benchlib.fmt import mb, num, p50, speed, table

LARGE_JSON = ROOT / "docs" / "bench" / "large.json"
WORK = Path("/tmp/large_bench")  # noqa: S108 (a fixed, documented place, wiped each run)
LLAMA: dict[str, Any] = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 10,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
CONFIG: dict[str, Any] = {
    "sequence": 16,
    "batch": 1,
    "iterations": 5,
    "warmup": 1,
    "threads": 2,
    "opset": 17,
    "export_rss_limit_mb": 8192,  # the export child is killed above it
    "service_rss_limit_mb": 9216,  # the service (all its processes' RSS summed) is stopped above it
    "raised_upload_limit_bytes": 4 * 1024**3,
}
INPUTS = ("input_ids", "attention_mask")
JOBS: dict[str, list[dict[str, Any]]] = {
    "optimize": [{"op": "optimize"}],
    "quantize weight_only bits 4": [{"op": "quantize", "mode": "weight_only", "bits": 4}],
    "quantize (dynamic int8, default)": [{"op": "quantize"}],
}


# ---------------------------------------------------------------- the export (child process)


def _vm(field: str, pid: int | str = "self") -> int:
    """A /proc/<pid>/status memory figure in kB (0 when absent or gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def export_child(out_dir: Path) -> dict[str, Any]:
    """The child side: build the random Llama, keep PyTorch's logits on a fixed input, export,
    gather the external data into one file. One JSON line (with VmHWM per phase) on stdout."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(CONFIG["threads"])
    torch.manual_seed(0)
    marks: dict[str, float] = {}
    started = time.perf_counter()
    config = LlamaConfig(**LLAMA)
    config._attn_implementation = "eager"  # the plain matmul/softmax graph, as real_llm.py
    model = LlamaForCausalLM(config).eval()
    params = int(sum(p.numel() for p in model.parameters()))
    marks["built_vmhwm_mb"] = _vm("VmHWM") / 1024

    class Logits(torch.nn.Module):
        def __init__(self, lm: Any) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.lm(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).logits

    module = Logits(model).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, LLAMA["vocab_size"], (CONFIG["batch"], CONFIG["sequence"]))
    feeds = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones_like(ids, np.int64)}
    with torch.no_grad():
        reference = module(*(torch.from_numpy(feeds[k]) for k in INPUTS)).numpy()
    np.savez(
        out_dir / "reference.npz",
        logits=reference,
        input_ids=feeds["input_ids"],
        attention_mask=feeds["attention_mask"],
    )
    raw = out_dir / "raw"
    raw.mkdir()
    axes = {k: {0: "batch", 1: "sequence"} for k in (*INPUTS, "logits")}
    example = tuple(torch.ones(1, 8, dtype=torch.long) for _ in INPUTS)
    t = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(
            module, example, str(raw / "model.onnx"), dynamo=False,
            opset_version=CONFIG["opset"], input_names=list(INPUTS), output_names=["logits"],
            dynamic_axes=axes,
        )  # fmt: skip
    export_s = time.perf_counter() - t
    marks["exported_vmhwm_mb"] = _vm("VmHWM") / 1024
    raw_files = sorted(p.name for p in raw.iterdir())
    del module, model
    import gc

    gc.collect()
    marks["after_free_vmrss_mb"] = _vm("VmRSS") / 1024
    import onnx

    t = time.perf_counter()
    proto = onnx.load(str(raw / "model.onnx"))  # reads the exporter's external data files
    final = out_dir / "model"
    final.mkdir()
    onnx.save_model(
        proto, str(final / "model.onnx"), save_as_external_data=True,
        all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=1024,
    )  # fmt: skip
    del proto
    shutil.rmtree(raw)
    gather_s = time.perf_counter() - t
    marks["gathered_vmhwm_mb"] = _vm("VmHWM") / 1024
    return {
        "exporter": f"torch.onnx.export(dynamo=False, opset_version={CONFIG['opset']})",
        "parameters": params,
        "exporter_files": len(raw_files),
        "export_s": round(export_s, 1),
        "gather_external_data_s": round(gather_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "files": {p.name: p.stat().st_size for p in sorted(final.iterdir())},
        "memory_mb": {k: round(v) for k, v in marks.items()},
    }


def export(out_dir: Path) -> dict[str, Any]:
    """Run export_child in a fresh process, watching its RSS (killed over the limit)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}:{ROOT}", "OMP_NUM_THREADS": "2"}
    code = "import sys, json; from benchlib import large; from pathlib import Path; "
    code += "print(json.dumps(large.export_child(Path(sys.argv[1]))))"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(out_dir)], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    peak, killed = 0, False

    def watch() -> None:
        nonlocal peak, killed
        while proc.poll() is None:
            rss = _vm("VmRSS", proc.pid)
            peak = max(peak, rss, _vm("VmHWM", proc.pid))
            if rss > CONFIG["export_rss_limit_mb"] * 1024:
                killed = True
                proc.kill()
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        why = "killed over the RSS limit" if killed else f"exit {proc.returncode}"
        raise RuntimeError(f"the export failed ({why}): {stderr[-3000:]}")
    record = dict(json.loads(stdout.strip().splitlines()[-1]))
    record["child_wall_s"] = round(time.perf_counter() - started, 1)
    record["child_peak_rss_mb_sampled"] = round(peak / 1024)
    return record


# ---------------------------------------------------------------- the service


def _start(data_dir: Path, log: Path, upload_limit: int | None) -> tuple[Any, httpx.Client]:
    """`modelpress run` with 2 sandbox threads and, where given, a raised upload limit."""
    settings = {"MODELPRESS_SANDBOX_THREADS": str(CONFIG["threads"])}
    if upload_limit is not None:
        settings["MODELPRESS_MAX_UPLOAD_BYTES"] = str(upload_limit)
    return service.start_service(data_dir, settings, log, timeout_s=1800)


class Sampler:
    """Samples the service's process tree every 0.25 s: per process, the largest RSS and VmHWM
    seen (VmHWM is the kernel's own high-water mark, so peaks between samples count too), and
    the largest sum of RSS over the tree. Stops the service above the RSS limit."""

    def __init__(self, root_pid: int) -> None:
        import psutil

        self.root = psutil.Process(root_pid)
        self.procs: dict[int, dict[str, Any]] = {}
        self.total_peak_kb = 0
        self.over_limit = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _role(self, pid: int, cmdline: list[str]) -> str:
        if pid == self.root.pid:
            return "api (modelpress run)"
        if "--embedded" in cmdline:
            return "embedded worker"
        return "sandbox processes (template and job or inspection children)"

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for proc in tree:
                rss, hwm = _vm("VmRSS", proc.pid), _vm("VmHWM", proc.pid)
                total += rss
                row = self.procs.get(proc.pid)
                if row is None:
                    try:
                        cmdline = proc.cmdline()
                    except psutil.Error:
                        cmdline = []
                    row = {"role": self._role(proc.pid, cmdline), "rss_kb": 0, "hwm_kb": 0}
                    self.procs[proc.pid] = row
                row["rss_kb"], row["hwm_kb"] = max(row["rss_kb"], rss), max(row["hwm_kb"], hwm)
            self.total_peak_kb = max(self.total_peak_kb, total)
            if total > CONFIG["service_rss_limit_mb"] * 1024 and not self.over_limit:
                self.over_limit = True
                os.killpg(self.root.pid, signal.SIGTERM)  # the service's process group
            self._stop.wait(0.25)

    def record(self) -> dict[str, Any]:
        rows: dict[str, dict[str, int]] = {}
        for row in self.procs.values():
            got = rows.setdefault(row["role"], {"peak_rss_mb": 0, "vmhwm_mb": 0, "processes": 0})
            got["peak_rss_mb"] = max(got["peak_rss_mb"], round(row["rss_kb"] / 1024))
            got["vmhwm_mb"] = max(got["vmhwm_mb"], round(row["hwm_kb"] / 1024))
            got["processes"] += 1
        return {
            "tree_rss_sum_peak_mb": round(self.total_peak_kb / 1024),
            "stopped_over_limit": self.over_limit,
            "processes": rows,
        }


def zip_model(folder: Path, out: Path) -> dict[str, Any]:
    """The `.onnx` and its data file, stored (weights do not compress), written in chunks."""
    started = time.perf_counter()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return {"bytes": out.stat().st_size, "wall_s": round(time.perf_counter() - started, 1)}


def upload(client: httpx.Client, archive: Path) -> dict[str, Any]:
    """POST the archive (streamed from disk), then wait for inspection to end."""
    started = time.perf_counter()
    with archive.open("rb") as fh:
        response = client.post("/v1/models", files={"file": (archive.name, fh)})
    posted = time.perf_counter() - started
    body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
    row: dict[str, Any] = {"http_status": response.status_code, "post_s": round(posted, 1)}
    if response.status_code not in (200, 201, 202):
        return row | {"error": body or response.text[:600]}
    model_id = body["id"]
    while (body := client.get(f"/v1/models/{model_id}").json())["status"] == "validating":
        time.sleep(1.0)
    row |= {"model_id": model_id, "status": body["status"]}
    row["ready_s"] = round(time.perf_counter() - started, 1)
    row["model"] = {k: v for k, v in body.items() if k not in ("id", "tenant_id")}
    return row


def _spec(model_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    shape = [CONFIG["batch"], CONFIG["sequence"]]
    return {
        "model_id": model_id,
        "steps": steps,
        "benchmark": {
            "batch_sizes": [CONFIG["batch"]],
            "iterations": CONFIG["iterations"],
            "warmup": CONFIG["warmup"],
            "noise_control": False,
            "memory": False,
            "input_shapes": {k: shape for k in INPUTS},
        },
    }


def _download(client: httpx.Client, job_id: str, name: str, out: Path) -> float:
    started = time.perf_counter()
    with client.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as stream:
        stream.raise_for_status()
        with out.open("wb") as fh:
            for chunk in stream.iter_bytes(1 << 20):
                fh.write(chunk)
    return round(time.perf_counter() - started, 1)


def check_artifact(path: Path) -> dict[str, Any]:
    """Unzip where it is a zip, open in ONNX Runtime (in a child, so that its memory is its
    own and measured), run on the reference input, compare with PyTorch's logits."""
    folder = path.parent / (path.stem + "_unpacked")
    onnx_file, row = path, {}  # type: tuple[Path, dict[str, Any]]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            row["members"] = {i.filename: i.file_size for i in zf.infolist()}
            zf.extractall(folder)
        onnx_file = next(folder.rglob("*.onnx"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}:{ROOT}"}
    code = "import sys, json; from benchlib import large; from pathlib import Path; "
    code += "print(json.dumps(large.run_child(Path(sys.argv[1]), Path(sys.argv[2]))))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(onnx_file), str(WORK / "export" / "reference.npz")],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    if done.returncode != 0:
        return row | {"loads": False, "error": done.stderr[-2000:]}
    return row | {"loads": True, **json.loads(done.stdout.strip().splitlines()[-1])}


def run_child(onnx_file: Path, reference_npz: Path) -> dict[str, Any]:
    """The child side of check_artifact."""
    import onnxruntime as ort

    ref = np.load(reference_npz)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = CONFIG["threads"]
    started = time.perf_counter()
    session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - started
    feeds = {k: ref[k] for k in INPUTS}
    started = time.perf_counter()
    got = session.run(None, feeds)[0].astype(np.float64)
    run_s = time.perf_counter() - started
    want = ref["logits"].astype(np.float64)
    a, b = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "load_s": round(load_s, 1),
        "first_run_s": round(run_s, 2),
        "output_shape": list(got.shape),
        "finite": bool(np.isfinite(got).all()),
        "cosine_min_vs_torch": float(cos.min()),
        "max_abs_error_vs_torch": float(np.abs(a - b).max()),
        "next_token_agreement_vs_torch": float((a.argmax(1) == b.argmax(1)).mean()),
        "vmhwm_mb": round(_vm("VmHWM") / 1024),
    }


def _report_numbers(report: dict[str, Any]) -> dict[str, Any]:
    """The report's key numbers: sizes, latency, fidelity, verdict, timings, step metrics (less
    their per-node and per-op-type lists)."""
    keep = ("baseline", "optimized", "comparison", "fidelity", "timings")
    kept = {k: report[k] for k in keep if k in report}
    verdict = report.get("verdict") or {}
    kept["verdict"] = {k: verdict.get(k) for k in ("met", "reasons")}
    bulky = ("op_types_after", "float_nodes", "head_nodes", "sensitivity")
    kept["steps"] = [
        {
            "op": s.get("op"),
            "wall_s": s.get("wall_s"),
            "warnings": s.get("warnings"),
            "metrics": {k: v for k, v in (s.get("metrics") or {}).items() if k not in bulky},
        }
        for s in report.get("steps", [])
    ]
    return kept


def run_job(
    client: httpx.Client, pid: int, model_id: str, name: str, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    """One job, timed from submit to its end, memory sampled; its artifact checked."""
    spec = _spec(model_id, steps)
    with Sampler(pid) as sampler:
        started = time.perf_counter()
        response = client.post("/v1/jobs", json=spec)
        if response.status_code != 202:
            return {"spec": spec, "http_status": response.status_code, "error": response.text}
        job_id = response.json()["id"]
        while (body := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(1.0)
        wall = time.perf_counter() - started
    row: dict[str, Any] = {"spec": spec, "status": body["status"], "wall_s": round(wall, 1)}
    row["memory"] = sampler.record()
    if body["status"] != "succeeded":
        return row | {"error": body.get("error")}
    artifacts = {a["name"]: a for a in body.get("artifacts", [])}
    model = next(a for a in artifacts.values() if a["kind"] == "model")
    row["artifact"] = {"name": model["name"], "size_bytes": model["size_bytes"]}
    row["report"] = _report_numbers(client.get(f"/v1/jobs/{job_id}/report").json())
    out = WORK / f"job-{job_id}-{model['name']}"
    row["artifact"]["download_s"] = _download(client, job_id, model["name"], out)
    row["artifact"]["check"] = check_artifact(out)
    out.unlink()
    return row


def default_limit_upload(archive: Path) -> dict[str, Any]:
    """The archive against the default upload limit: what a user gets out of the box."""
    proc, client = _start(WORK / "data-default", WORK / "service-default.log", None)
    try:
        return upload(client, archive)
    finally:
        service.stop_service(proc)
        shutil.rmtree(WORK / "data-default", ignore_errors=True)


def measure(command: str) -> dict[str, Any]:
    """The whole run; temporary files under WORK, deleted at the end (the service log kept
    only where something failed, its tail then saved in the record)."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    record: dict[str, Any] = {"llama_config": LLAMA, "config": CONFIG}
    record["weights"] = "random (untrained, transformers' init, seed 0): sizes and memory only"
    try:
        (WORK / "export").mkdir()
        record["export"] = export(WORK / "export")
        archive = WORK / "model.zip"
        record["archive"] = zip_model(WORK / "export" / "model", archive)
        shutil.rmtree(WORK / "export" / "model")  # the archive holds it now
        record["upload_default_limit"] = default_limit_upload(archive)
        log = WORK / "service.log"
        limit = CONFIG["raised_upload_limit_bytes"]
        proc, client = _start(WORK / "data", log, limit)
        try:
            with Sampler(proc.pid) as sampler:
                record["upload"] = upload(client, archive)
            record["upload"]["memory"] = sampler.record()
            archive.unlink()
            model_id = record["upload"].get("model_id")
            record["jobs"] = {}
            if record["upload"].get("status") == "ready":
                for name, steps in JOBS.items():
                    record["jobs"][name] = run_job(client, proc.pid, model_id, name, steps)
                    print(name, record["jobs"][name]["status"], flush=True)
        finally:
            if proc.poll() is None:
                service.stop_service(proc)
            record["service_log_tail"] = log.read_text(errors="replace")[-6000:]
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    record["run"] = service.run_record(command, started, load_before)
    return record


# ---------------------------------------------------------------- BENCHMARKS.md

TITLE = "## A model over 2 GB through the service (`scripts/bench.py --large`)"
SANDBOX = "sandbox processes (template and job or inspection children)"


def render(data: dict[str, Any] | None) -> str:
    """The section of BENCHMARKS.md, every figure from docs/bench/large.json."""
    if data is None:
        return f"{TITLE}\n\nNot measured yet: `python scripts/bench.py --large`.\n"
    lines = [TITLE, "", _how(data), "", _model(data), "", *_uploads(data), ""]
    lines += _jobs(data)
    notes = _notes(data)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _how(data: dict[str, Any]) -> str:
    run, cfg = data["run"], data.get("config") or {}
    bench = (
        f"batch {cfg.get('batch')}, {cfg.get('sequence')} tokens, {cfg.get('iterations')} "
        f"iterations after {cfg.get('warmup')} warm-up, no noise-control copy, no memory probes"
    )
    return (
        f"Measured by `{run['command']}` on {run['date']} in {run['wall_s'] / 60:.0f} min "
        f"(1-minute load average {run['load_average_1min_before']:.2f} as it started), saved in "
        "`docs/bench/large.json` (`scripts/benchlib/large.py`): the model is exported in a child "
        "process, zipped and uploaded through the API of `modelpress run` (API + embedded "
        f"worker, SQLite, {cfg.get('threads')} sandbox threads), then each job runs on it one by "
        f"one with a small benchmark ({bench}); each downloaded artifact is opened in ONNX "
        "Runtime and its logits compared with PyTorch's on the export's reference input (the "
        "benchmark's own check). Resident memory of the service's processes is sampled from "
        f"/proc every 0.25 s. Weights: {data.get('weights', 'n/a')}. As they are untrained, the "
        "fidelity figures below only show that the pipeline carries a model this size through "
        "and back intact; they say nothing about the accuracy a method keeps on a trained model."
    )


def _model(data: dict[str, Any]) -> str:
    cfg, exp = data.get("llama_config") or {}, data["export"]
    shape = (
        f"hidden {cfg.get('hidden_size')}, intermediate {cfg.get('intermediate_size')}, "
        f"{cfg.get('num_hidden_layers')} layers, {cfg.get('num_attention_heads')} heads "
        f"({cfg.get('num_key_value_heads')} key-value), vocabulary {cfg.get('vocab_size')}, "
        + ("tied" if cfg.get("tie_word_embeddings") else "untied")
        + " lm_head"
    )
    files = " + ".join(f"`{n}` {mb(s)} MB" for n, s in (exp.get("files") or {}).items())
    memory = exp.get("memory_mb") or {}
    return (
        f"The model: a Llama-architecture decoder (transformers' `LlamaConfig`: {shape}), "
        f"{exp['parameters']:,} parameters (PyTorch's count), exported by `{exp['exporter']}` "
        "(`input_ids` + `attention_mask` -> `logits`, no KV cache) in "
        f"{exp['export_s']:.1f} s; the exporter's {exp.get('exporter_files')} files were then "
        f"gathered into one external data file in {exp.get('gather_external_data_s')} s: "
        f"{files}. The export child process took {exp.get('child_wall_s')} s in all, with a "
        f"peak RSS of {exp.get('child_peak_rss_mb_sampled')} MB (sampled; its own VmHWM "
        f"{memory.get('gathered_vmhwm_mb')} MB, {memory.get('built_vmhwm_mb')} MB once the "
        "model was built)."
    )


def _limit(row: dict[str, Any]) -> str:
    """`HTTP 413 (...)` with the limit the service stated, or how the upload went."""
    error = row.get("error")
    if row["http_status"] in (200, 201, 202):
        return (
            f"HTTP {row['http_status']} after {row['post_s']:.1f} s, `{row.get('status')}` "
            f"{row.get('ready_s')} s after the POST began."
        )
    if isinstance(error, dict):
        text = f"HTTP {row['http_status']} `{error.get('code')}` after {row['post_s']:.1f} s: "
        return text + f'"{error.get("detail")}"'
    return f"HTTP {row['http_status']} after {row['post_s']:.1f} s: {error}."


def _stated_limit(row: dict[str, Any]) -> int | None:
    """The byte limit a 413's detail states ("... the limit of N bytes.")."""
    detail = str((row.get("error") or {}).get("detail", ""))
    found = [int(w) for w in detail.replace(".", " ").split() if w.isdigit()]
    return found[-1] if found else None


def _io(tensors: list[dict[str, Any]] | None) -> str:
    """`name` dtype [dims] for each input or output the inspection found."""
    return ", ".join(
        f"`{t['name']}` {t['dtype']} [{', '.join(map(str, t['shape'] or []))}]"
        for t in tensors or []
    )


def _mem(memory: dict[str, Any] | None, role: str, key: str = "peak_rss_mb") -> str:
    row = ((memory or {}).get("processes") or {}).get(role) or {}
    return "n/a" if row.get(key) is None else str(row[key])


def _uploads(data: dict[str, Any]) -> list[str]:
    archive, default, up = data["archive"], data["upload_default_limit"], data["upload"]
    raised = (data.get("config") or {}).get("raised_upload_limit_bytes")
    lines = [
        f"The archive: both files in one stored (uncompressed) zip, {archive['bytes']:,} bytes "
        f"({mb(archive['bytes'])} MB), written in {archive['wall_s']:.1f} s.",
        "",
        f"- Upload with the default limit (`MODELPRESS_MAX_UPLOAD_BYTES` unset): {_limit(default)}",
    ]
    limit = _stated_limit(default) if default["http_status"] == 413 else None
    if limit is not None:
        lines[-1] += (
            f" The default limit was {limit / 1024**3:g} GiB when this ran; `app/core/config.py`'s "
            "default has since been raised to 4 GiB (not measured again here)."
        )
    model, memory = up.get("model") or {}, up.get("memory")
    lines.append(
        f"- Upload with the limit raised (`MODELPRESS_MAX_UPLOAD_BYTES={raised}`): {_limit(up)}"
    )
    if model.get("parameter_count") is not None:
        lines[-1] += (
            f" Inspection found opset {model.get('opset')}, {model['parameter_count']:,} "
            f"parameters, inputs {_io(model.get('inputs'))}, outputs {_io(model.get('outputs'))}."
        )
    if memory:
        lines[-1] += (
            f" Memory meanwhile: API peak RSS {_mem(memory, 'api (modelpress run)')} MB, embedded "
            f"worker {_mem(memory, 'embedded worker')} MB, sandbox (inspection child) VmHWM "
            f"{_mem(memory, SANDBOX, 'vmhwm_mb')} MB; the service's processes together peaked at "
            f"{memory.get('tree_rss_sum_peak_mb')} MB RSS."
        )
    return lines


def _job_row(name: str, job: dict[str, Any]) -> list[str]:
    """One row of the jobs table."""
    memory = job.get("memory")
    status = job.get("status", f"HTTP {job.get('http_status')}")
    if status != "succeeded" and job.get("error") is not None:
        status += f": {job['error']}"
    art = job.get("artifact") or {}
    check, report = art.get("check") or {}, job.get("report") or {}
    if "members" in check:
        members = " + ".join(f"`{n}` {mb(s)} MB" for n, s in check["members"].items())
        artifact = f"`{art['name']}` (zip: {members})"
    elif art:
        artifact = f"`{art['name']}` (one file)"
    else:
        artifact = "n/a"
    comparison = report.get("comparison") or {}
    before, after = p50(report.get("baseline") or {}, 1), p50(report.get("optimized") or {}, 1)
    latency = f"{num(before, '.0f')} -> {num(after, '.0f')}"
    if before is not None and after is not None:
        latency += f" ({speed((comparison.get('speedup') or {}).get('1'))})"
    logits = ((report.get("fidelity") or {}).get("outputs") or {}).get("logits") or {}
    samples = (report.get("fidelity") or {}).get("samples")
    fidelity = (
        f"{samples} inputs: cosine mean {num(logits.get('cosine_mean'), '.4f')} / min "
        f"{num(logits.get('cosine_min'), '.4f')}, top-1 {num(logits.get('top1_agreement'), '.3f')}"
        if logits
        else "n/a"
    )
    if not check:
        own = "n/a"
    elif not check.get("loads"):
        own = "did not load"
    else:
        own = (
            f"cosine min {num(check.get('cosine_min_vs_torch'), '.4f')}, max abs "
            f"{num(check.get('max_abs_error_vs_torch'), '.2g')}, next token "
            f"{num(check.get('next_token_agreement_vs_torch'), '.3f')}"
        )
    return [
        name,
        status,
        num(job.get("wall_s"), ".1f"),
        artifact,
        mb(art.get("size_bytes")),
        num(comparison.get("size_ratio"), ".3f"),
        latency,
        fidelity,
        own,
        _mem(memory, SANDBOX, "vmhwm_mb"),
        num((memory or {}).get("tree_rss_sum_peak_mb"), ".0f"),
        _mem(memory, "api (modelpress run)"),
    ]


def _jobs(data: dict[str, Any]) -> list[str]:
    jobs = data.get("jobs") or {}
    if not jobs:
        return ["No jobs ran (the upload did not become `ready`)."]
    tokens = (data.get("config") or {}).get("sequence")
    header = [
        "job",
        "status",
        "wall, submit to end (s)",
        "artifact",
        "size (MB)",
        "size ratio",
        "p50 batch 1 (ms), fp32 -> result",
        "fidelity vs fp32 (the job's report, logits)",
        f"vs PyTorch (the benchmark's own check, {tokens} tokens)",
        "sandbox VmHWM (MB)",
        "service processes, RSS sum peak (MB)",
        "API peak RSS (MB)",
    ]
    return [
        "The jobs (one after another on the uploaded model):",
        "",
        *table(header, (_job_row(name, job) for name, job in jobs.items())),
    ]


def _notes(data: dict[str, Any]) -> list[str]:
    notes = []
    jobs = data.get("jobs") or {}
    for name, job in jobs.items():
        report = job.get("report") or {}
        for step in report.get("steps") or []:
            for warning in step.get("warnings") or []:
                notes.append(f'- {name}: the {step.get("op")} step warned: "{warning}"')
        if (job.get("memory") or {}).get("stopped_over_limit"):
            notes.append(f"- {name}: the service was stopped over the RSS limit.")
    timed = {n: (j.get("report") or {}).get("timings") or {} for n, j in jobs.items()}
    timed = {n: t for n, t in timed.items() if t.get("benchmark_s") is not None}
    if timed:
        parts = [
            f"{n} {t.get('steps_s', 0):.1f} s in its step, {t['benchmark_s']:.1f} s in the "
            f"benchmark ({(t.get('benchmark') or {}).get('fidelity_s', 0):.1f} s of it fidelity)"
            for n, t in timed.items()
        ]
        notes.append(f"- Where the wall went (the reports' timings): {'; '.join(parts)}.")
    downloads = [
        f"{n} {j['artifact']['download_s']:.1f} s"
        for n, j in jobs.items()
        if (j.get("artifact") or {}).get("download_s") is not None
    ]
    if downloads:
        notes.append(f"- Downloading the artifact took {', '.join(downloads)}.")
    iterations = (data.get("config") or {}).get("iterations")
    if any(j.get("report") for j in jobs.values()):
        notes.append(
            f"- The latencies are medians of {iterations} iterations with no noise-control copy "
            "(each job's report compares them without a noise estimate): a ratio near 1 is not a "
            "measured difference."
        )
    return ["Notes:", "", *notes] if notes else []
