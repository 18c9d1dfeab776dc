"""What the real-model renderers share: the reference rows, latency cells, a job's verdict."""

from __future__ import annotations

import re
from typing import Any

from benchlib.fmt import num, speed

INSTALL = "`pip install -e '.[bench]'`"
MEASURE = "`python scripts/bench.py --real`"
REFERENCE = ("fp32", "fp32, second session (noise control)")


def clean(text: str, limit: int = 300) -> str:
    """An error message without the scratch folders it names (the file's own name is kept),
    its beginning and its end where it is long (ONNX Runtime puts the reason last)."""
    text = re.sub(r"/\S*/([^/\s]+)", r"\1", text)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]} ... {text[-limit // 2 :]}"


def ordered(rows: dict[str, Any], jobs: dict[str, Any]) -> list[str]:
    """The table's rows: fp32, its control and the direct recipes, then every job in order."""
    return [*(n for n in rows if n not in jobs), *jobs]


def p50(row: dict[str, Any]) -> float | None:
    return row["latency_ms"].get("p50")


def noise(rows: dict[str, Any]) -> float | None:
    """p50 of the second fp32 session / the first's (1.0 = no noise)."""
    base, control = p50(rows[REFERENCE[0]]), p50(rows[REFERENCE[1]])
    return control / base if base and control else None


def latency_cells(rows: dict[str, Any], name: str) -> list[str]:
    """p50, the ratio to fp32's p50 and the same in words (flagged inside the noise)."""
    base, value = p50(rows["fp32"]), p50(rows[name])
    cell = num(value / base if value and base else None, ".2f", "x")
    if name not in REFERENCE:
        cell += f" ({speed(base / value if base and value else None, noise(rows))})"
    return [num(value, ".1f"), cell]


def iterations(rows: dict[str, Any]) -> str:
    """How many timed runs each row got (the time budget may stop some rows early)."""
    counts = sorted({r["latency_ms"]["iterations"] for r in rows.values()})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"


def same_files(rows: dict[str, Any]) -> list[list[str]]:
    """Groups of rows whose files are byte-identical (their p50s differ by noise alone)."""
    groups: dict[str, list[str]] = {}
    for name, row in rows.items():
        if name not in REFERENCE and row.get("sha256"):
            groups.setdefault(row["sha256"], []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def same_file_sentence(rows: dict[str, Any]) -> str | None:
    """The noise two identical files show, where two rows hold the same file."""
    texts = []
    for group in same_files(rows):
        times = [p50(rows[n]) or 0.0 for n in group]
        spread = max(times) / min(times) - 1 if min(times) else 0.0
        names = " and ".join(f"`{n}`" for n in group)
        texts.append(f"{names} are the same file, byte for byte: their p50s differ by {spread:.0%}")
    if not texts:
        return None
    return "; ".join(texts) + " (this run's noise, like the second fp32 session's)."


def verdict_text(job: dict[str, Any]) -> str:
    """`met: true|false`, what auto chose, the missed constraints and, when not met, the first
    note (the guard's reason comes first); or why the job failed."""
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        return f"job {job['status']}: `{error.get('code')}`"
    verdict = job["report"]["verdict"]
    text = f"met: {str(verdict['met']).lower()}"
    if job["report"].get("auto"):
        text += f"; auto chose `{job['report']['auto']['chosen']}`"
    missed = [r for r in verdict.get("reasons", []) if r.startswith("missed")]
    text += f"; {'; '.join(missed)}" if missed else ""
    notes = verdict.get("notes") or []
    return text + (f"; {notes[0]}" if notes and not verdict["met"] else "")


def kept_float(job: dict[str, Any]) -> list[str]:
    """The nodes a job's quantize step left in float, from its own record."""
    steps = job.get("report", {}).get("steps", [])
    return [n for s in steps if s["op"] == "quantize" for n in s["metrics"].get("float_nodes", [])]


def quantize_metrics(job: dict[str, Any]) -> dict[str, Any]:
    """The metrics of a job's (last) quantize step (empty without one)."""
    steps = job.get("report", {}).get("steps", [])
    quantize = [s["metrics"] for s in steps if s["op"] == "quantize"]
    return quantize[-1] if quantize else {}


def keep_float_record(job: dict[str, Any]) -> dict[str, Any]:
    """The quantize step's `keep_float: auto` record (empty without one)."""
    metrics = quantize_metrics(job)
    if "keep_float" not in metrics:
        return {}
    return metrics["keep_float"] | {
        "samples": metrics.get("sensitivity_samples"),
        "unmeasured": metrics.get("sensitivity_unmeasured"),
    }


def report_speed(job: dict[str, Any]) -> str:
    """The speed-up and noise control the job's own report measured."""
    comp = job["report"]["comparison"]
    speedups = ", ".join(f"{v:.2f}x at batch {b}" for b, v in comp["speedup"].items())
    noise_ = ", ".join(f"{v:.2f}" for v in (comp.get("noise") or {}).values()) or "not measured"
    return f"its report timed {speedups} (noise control {noise_})"


def rerun_lines(section: dict[str, Any]) -> list[str]:
    """Where a section was measured alone (`--real --only`): by what, when, on which CPU, how
    busy the machine was. Nothing for a section of the run the header describes."""
    run, env = section.get("run"), section.get("environment")
    if run is None:
        return []
    where = f" on {env['cpu_model']} (flags {', '.join(env['cpu_flags'])})" if env else ""
    text = (
        f"This section was measured alone by `{run['command']}` on {run['date']}{where} in "
        f"{run['wall_s'] / 60:.0f} min (1-minute load average {run['load_average_1min_before']:.2f}"
        f" as it started, {run['load_average_1min_after']:.2f} as it ended, the benchmark's own "
        "service and jobs included: read the ratios beside the noise-control row)."
    )
    return [text, ""]
