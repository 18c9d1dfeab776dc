"""BENCHMARKS.md's GPU section, from `docs/bench/gpu.json` (saved by scripts/gpu_check.py)."""

from __future__ import annotations

from typing import Any

from benchlib.fmt import num, table, words

HEADING = "## A `device: cuda` job (`scripts/gpu_check.py`)"


def gpu_section(gpu: dict[str, Any] | None) -> list[str]:
    """The saved CUDA check: where it ran, the per-device table, and what it shows."""
    if gpu is None:
        return [
            HEADING,
            "",
            "No GPU measurement is saved: `python scripts/gpu_check.py OUT` on a CUDA machine "
            "writes `docs/bench/gpu.json`, and `python scripts/bench.py --render` adds it here.",
        ]
    runs = gpu["runs"]
    verdict = " ".join(s for s in (_speed(runs), _providers(runs)) if s)
    return [HEADING, "", _provenance(gpu), "", *_table(gpu), "", verdict]


def describe_step(step: dict[str, Any]) -> str:
    """A step's config in words (the fields the check sets; others are the pass's defaults)."""
    if step["op"] == "prune" and step.get("method") == "channel":
        return f"channel pruning {step['ratio']:.0%}"
    if step["op"] == "distill" and "epochs" in step:
        return f"{step['epochs']} epochs of distillation"
    return step["op"]


def _provenance(gpu: dict[str, Any]) -> str:
    """Which command saved the file, when, on what, and with which libraries."""
    src, job, cuda = gpu["source"], gpu["job"], gpu["runs"]["cuda"]
    where = _machine(src["machine"])
    libs = cuda.get("libraries", {})
    facts = [f"driver {src['machine']['driver']}"] if src["machine"].get("driver") else []
    facts += [f"{k} {libs[k]}" for k in ("torch", "onnxruntime") if k in libs]
    if "threads" in cuda.get("environment", {}):
        facts.append(f"{cuda['environment']['threads']} threads")
    text = (
        "Not measured by `make bench` (it needs a CUDA GPU): rendered from `docs/bench/gpu.json`, "
        f"measured by `{src['command']}` on {src['date']} on {where} ({', '.join(facts)}). "
        f"The check runs one job ({words([describe_step(s) for s in job['steps']])} on "
        f"{job['dataset']}, then the report) through `{src['pipeline']}` with "
        f"{words([f'`device: {d}`' for d in gpu['runs']])}."
    )
    if src.get("transcribed_from"):
        text += f" {src['transcribed_from']}"
    return text


def _machine(machine: dict[str, Any]) -> str:
    """The machine in words: its saved description, else its GPU and CPU."""
    if machine.get("description"):
        return str(machine["description"])
    gpu = machine.get("gpu") or "an unnamed CUDA GPU"
    if not machine.get("cpu_model"):
        return f"a machine with {gpu}"
    return f"a machine with {gpu} and {machine['cpu_model']}, {machine.get('cores')} cores"


def _table(gpu: dict[str, Any]) -> list[str]:
    """One row per device: where distillation ran, its wall time, the job's, the accuracy."""
    epochs = [s["epochs"] for s in gpu["job"]["steps"] if s["op"] == "distill" and "epochs" in s]
    distill = f"distillation wall ({epochs[0]} epochs)" if epochs else "distillation wall"
    header = ["", "distillation ran on", distill, "job wall", "accuracy original -> result"]
    rows = []
    for device, run in gpu["runs"].items():
        ran_on = run.get("distill_device") or "not recorded"
        if run.get("environment", {}).get("gpu"):
            ran_on += f" ({run['environment']['gpu']} in the report's environment)"
        acc = run.get("accuracy")
        accuracy = f"{acc['baseline']:.4f} -> {acc['optimized']:.4f}" if acc else "not measured"
        walls = [num(run.get(k), ".2f", " s") for k in ("distill_train_wall_s", "job_wall_s")]
        rows.append([f"`device: {device}`", ran_on, *walls, accuracy])
    return table(header, rows)


def _speed(runs: dict[str, Any]) -> str:
    """Whether the GPU paid off for distillation, from the two measured wall times."""
    gpu_s = runs.get("cuda", {}).get("distill_train_wall_s")
    cpu_s = runs.get("cpu", {}).get("distill_train_wall_s")
    if gpu_s is None or cpu_s is None:
        return ""
    if gpu_s >= cpu_s:
        return (
            f"On this small network the GPU did not pay off (distillation {gpu_s:.2f} s on cuda, "
            f"{cpu_s:.2f} s on the CPU); the check shows the `device: cuda` path works end to end."
        )
    return f"Distillation ran {cpu_s / gpu_s:.1f}x faster on cuda than on the CPU."


def _providers(runs: dict[str, Any]) -> str:
    """Whether the CUDA job's ONNX models ran on the GPU or fell back to the CPU."""
    providers = runs.get("cuda", {}).get("providers") or []
    if not providers:
        return ""
    if all("CUDA" in p for p in providers):
        return f"The CUDA job's ONNX models ran on {words(sorted(set(providers)))}."
    if any("CUDA" in p for p in providers):
        return f"The CUDA job's models ran on {words(providers)} (original, result)."
    text = (
        "That machine's onnxruntime had no CUDA provider, so both reports measured the ONNX "
        f"models on the CPU ({words(sorted(set(providers)))})"
    )
    notes = runs["cuda"].get("notes") or []
    if any("CUDA provider" in n for n in notes):
        text += " and the CUDA report says so in its notes"
    return text + "."
