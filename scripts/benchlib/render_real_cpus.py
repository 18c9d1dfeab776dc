"""BENCHMARKS.md's "both CPU kinds" table: the same real-model benchmark (`scripts/bench.py
--real`) saved from a machine of each kind this project runs on, side by side. `real.json` is the
newest run; `real-<kind>.json` files keep a run from a machine of another kind (copied there by
hand when the machine kind changed: a later run overwrites `real.json` only). A run's
`run.notes`, written by hand where the code changed after that run, are listed under the table.

ONNX Runtime's int8 kernels differ between the kinds (u8s8 sums saturate on AVX2 without VNNI;
worker/cpu.py), so the int8 rows' fidelity and speed are only comparable within one kind: each
cell compares a row with the fp32 row measured in the same run, on the same machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchlib import BENCH_DIR
from benchlib.fmt import num
from benchlib.render_real_common import REFERENCE, p50

HEADING = "### The same benchmark on both CPU kinds"
MODELS = {"minilm": "all-MiniLM-L6-v2", "ocr": "PP-OCRv4 detector", "llm": "SmolLM2-135M"}


def other_runs() -> list[tuple[Path, dict[str, Any]]]:
    """The saved runs from machines of another kind (`docs/bench/real-*.json`)."""
    return [(p, json.loads(p.read_text())) for p in sorted(BENCH_DIR.glob("real-*.json"))]


def kind(real: dict[str, Any]) -> str:
    """The CPU kind a run was measured on, from its flags."""
    flags = set(real["environment"]["cpu_flags"])
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI"
    if "avx_vnni" in flags:
        return "AVX-VNNI"
    return "AVX2, no VNNI" if "avx2" in flags else "no AVX2"


def _fidelity(model: str, row: dict[str, Any]) -> str:
    if model == "llm":
        return f"{row['agreed']}/{row['prompts']} next tokens"
    if model == "ocr":
        return f"map cosine {num(row.get('cosine_mean'), '.4f')}"
    return f"cosine {num(row.get('cosine_mean'), '.4f')} / {num(row.get('cosine_min'), '.4f')}"


def _cell(model: str, rows: dict[str, Any] | None, name: str) -> str:
    """`latency vs fp32, fidelity` of one row in one run, or `-` where that run lacks it."""
    if rows is None or name not in rows:
        return "-"
    base, value = p50(rows["fp32"]), p50(rows[name])
    ratio = num(value / base if value and base else None, ".2f", "x")
    return f"{ratio}, {_fidelity(model, rows[name])}"


def _rows(real: dict[str, Any], model: str) -> dict[str, Any] | None:
    section = real.get(model)
    return None if section is None else section["measured"]["rows"]


def cpus_section(real: dict[str, Any], others: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """Every row of every real model, its latency vs fp32 and its fidelity, in each run."""
    runs = [("docs/bench/real.json", real), *((f"docs/bench/{p.name}", r) for p, r in others)]
    header = [f"{kind(r)} (`{path}`, {r['run']['date']})" for path, r in runs]
    out = [
        HEADING,
        "",
        "Each cell: p50 latency vs fp32 in the same run, then fidelity (MiniLM: sentence cosine "
        "mean / worst; the detector: probability-map cosine mean; the LLM: next tokens equal to "
        "fp32's). The kinds' int8 kernels differ, so compare rows within a column; `-`: that "
        "run had no such row.",
        "",
        f"| model | variant | {' | '.join(header)} |",
        "| --- | --- | " + " | ".join("---" for _ in runs) + " |",
    ]
    for model, title in MODELS.items():
        tables = [_rows(r, model) for _, r in runs]
        names: list[str] = []
        for rows in tables:
            names += [n for n in rows or {} if n not in names and n != REFERENCE[0]]
        for name in names:
            cells = " | ".join(_cell(model, rows, name) for rows in tables)
            out.append(f"| {title} | {name} | {cells} |")
    notes = [f"- `{path}`: {note}" for path, r in runs for note in r["run"].get("notes", [])]
    return [*out, *(["", *notes] if notes else [])]
