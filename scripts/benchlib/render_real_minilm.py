"""BENCHMARKS.md's all-MiniLM-L6-v2 subsection, from `docs/bench/real.json`'s `minilm` record."""

from __future__ import annotations

from typing import Any

from benchlib.fmt import mb, table, words
from benchlib.render_real_common import (
    INSTALL,
    REFERENCE,
    clean,
    iterations,
    keep_float_record,
    kept_float,
    latency_cells,
    ordered,
    p50,
    quantize_metrics,
    report_speed,
    rerun_lines,
    same_file_sentence,
    verdict_text,
)

HEADING = "### all-MiniLM-L6-v2 (sentence embeddings, batch 32 x 128 tokens)"


def minilm_section(m: dict[str, Any]) -> list[str]:
    """The heading, what was measured, the table and what it shows."""
    if "skipped" in m:
        return [HEADING, "", f"Not measured: {m['skipped']} Install them with {INSTALL}."]
    parts = [HEADING, "", *rerun_lines(m), intro(m), "", *minilm_table(m), ""]
    return [*parts, *[f"- {f}" for f in findings(m)]]


def intro(m: dict[str, Any]) -> str:
    pkg, exp, sent, c = m["package"], m["export"], m["sentences"], m["config"]
    shipped = [f for f in pkg["files"] if f.endswith((".safetensors", ".onnx", "tokenizer.json"))]
    lo, mean, hi = sent["tokens"]
    rows = m["measured"]["rows"]
    return (
        f"The package `{pkg['name']}` {pkg['version']} ships {words([f'`{f}`' for f in shipped])} "
        f"and no ONNX file, so the encoder was exported here ({exp['exporter']}, eager "
        "attention, sentence-transformers' masked mean pooling inside the graph, dynamic batch "
        f"and sequence; {exp['bytes'] / 1e6:.1f} MB, max abs error vs PyTorch "
        f"{exp['max_abs_error_vs_torch']:.1e} on the sentences). Fidelity: the cosine of each of "
        f"{sent['count']} real English sentences' embedding (`{sent['file']}`, {lo} to {hi} "
        f"tokens, mean {mean:.0f}, padded to {c['sequence']}, run in batches of {c['batch']}) to "
        f"fp32's. Latency: p50 of {iterations(rows)} interleaved runs per row at batch "
        f"{c['batch']} x {c['sequence']} (1-minute load average "
        f"{m['measured']['load_average_1min_before']:.2f} as the timing began). Both ModelPress "
        f'jobs had `constraints: {{"min_cosine": {c["min_cosine"]}}}` and `evaluation` on these '
        "sentences (an uploaded .npz of the tokenized sentences, `labels` = fp32's embeddings, "
        "metric `cosine`), so their verdicts judged the real sentences; the direct recipes are "
        "ONNX Runtime called straight, as a script would."
    )


def minilm_table(m: dict[str, Any]) -> list[str]:
    rows, target = m["measured"]["rows"], m["config"]["min_cosine"]
    header = ["variant", "size (MB)", "p50 (ms)", "latency vs fp32", "cosine mean / worst"]
    header += [f"sentences below {target}", "verdict (ModelPress jobs)"]
    lines = []
    for name in ordered(rows, m["jobs"]):
        job = verdict_text(m["jobs"][name]) if name in m["jobs"] else ""
        if name not in rows:  # a failed job has no file to measure
            lines.append([name, "", "", "", "", "", job])
            continue
        row = rows[name]
        cosine = f"{row['cosine_mean']:.4f} / {row['cosine_min']:.4f}"
        cells = [name, mb(row["size_bytes"]), *latency_cells(rows, name), cosine]
        lines.append([*cells, str(row["below_min_cosine"]), job])
    return table(header, lines)


def findings(m: dict[str, Any]) -> list[str]:
    """The targets in words: each job against the fastest direct recipe, fidelity, noise."""
    rows, target = m["measured"]["rows"], m["config"]["min_cosine"]
    direct = {k: r for k, r in rows.items() if k in m["direct"]}
    faithful = {k: r for k, r in direct.items() if r["cosine_mean"] >= target}
    out = [_direct_sentence(direct, faithful, target)]
    for name, job in m["jobs"].items():
        if name in rows:
            out.append(_job_sentence(name, job, rows, faithful or direct, target))
            out.append(_kept_sentence(name, job))
        else:
            out.append(f"`{name}` {job['status']}: {clean(str(job.get('error')))}")
        if job.get("report", {}).get("candidates"):
            out.append(_candidates_sentence(job["report"]["candidates"]))
    same = same_file_sentence(rows)
    worst = sorted({r["worst_sentence"] for k, r in rows.items() if k not in REFERENCE})
    quoted = [f'"{w}"' for w in worst]
    return [*out, *([same] if same else []), f"Worst sentences of the int8 rows: {words(quoted)}."]


def _fastest(rows: dict[str, Any]) -> str:
    return min(rows, key=lambda k: p50(rows[k]) or float("inf"))


def _direct_sentence(direct: dict[str, Any], faithful: dict[str, Any], target: float) -> str:
    fastest = _fastest(direct)
    r = direct[fastest]
    text = (
        f"The fastest direct recipe was `{fastest}` ({p50(r):.1f} ms, cosine mean "
        f"{r['cosine_mean']:.4f}, worst sentence {r['cosine_min']:.4f})"
    )
    if not faithful:
        best = max(direct, key=lambda k: direct[k]["cosine_mean"])
        return (
            f"{text}. No direct recipe reached a cosine mean of {target} on these sentences (the "
            f"closest: `{best}`, {direct[best]['cosine_mean']:.4f}), so the jobs below are "
            "compared with the fastest direct recipe at any fidelity."
        )
    best = _fastest(faithful)
    if best == fastest:
        return f"{text}, and it kept the cosine mean at or above {target}."
    return (
        f"{text}; the fastest that kept the cosine mean at or above {target} was `{best}` "
        f"({p50(faithful[best]):.1f} ms, {faithful[best]['cosine_mean']:.4f})."
    )


def _job_sentence(
    name: str, job: dict[str, Any], rows: dict[str, Any], pool: dict[str, Any], target: float
) -> str:
    """One job's file against the fastest eligible direct recipe; our numbers vs its report's."""
    row, rep, best = rows[name], job["report"], _fastest(pool)
    ratio = p50(row) / p50(pool[best])
    if ratio <= 1:
        pace = f"reached the speed of `{best}` ({ratio:.2f}x its p50)"
    else:
        gap = p50(row) - p50(pool[best])
        pace = (
            f"did NOT reach the speed of `{best}`: {ratio:.2f}x its p50, {gap:.0f} ms slower. "
            f"Why: to meet the fidelity bar it kept {len(kept_float(job))} node(s) float, each "
            "at fp32 speed, where the direct recipe misses the bar "
            f"(cosine mean {pool[best]['cosine_mean']:.4f}, worst {pool[best]['cosine_min']:.4f}): "
            "ONNX Runtime's dynamic int8 scales each activation tensor as a whole, and on this "
            "encoder's real sentences the error that causes is spread over many layers' "
            "projections, not one that could stay float alone"
        )
    own = next(iter(rep["fidelity"]["outputs"].values()))
    meets = "meets" if row["cosine_mean"] >= target else "MISSES"
    return (
        f"`{name}` (wall time {job['wall_s']:.0f} s) {pace}. Its cosine mean here: "
        f"{row['cosine_mean']:.4f} ({meets} {target}); in its report {own['cosine_mean']:.4f} on "
        f"the same sentences at its evaluation batch of {rep['fidelity']['batch_size']}; "
        f"{report_speed(job)}; verdict met: {str(rep['verdict']['met']).lower()}."
    )


def _kept_sentence(name: str, job: dict[str, Any]) -> str:
    """What `keep_float: auto` kept in float, and on which inputs it decided."""
    kept, record = kept_float(job), keep_float_record(job)
    short = [k.removeprefix("/bert/encoder/").removesuffix("/MatMul") for k in kept]
    text = f"`{name}` kept {len(kept)} node(s) float: {', '.join(short) or 'none'}"
    if record.get("cosine_mean") is not None:
        text += (
            f"; `keep_float: auto` chose them by bisection over {len(record['probes'])} real "
            f"quantizations, measured on {_judged_on(job, record)}, where it reached cosine mean "
            f"{record['cosine_mean']:.4f}"
        )
        if record.get("cosine_min") is not None:
            floor = record.get("target_sample_cosine")
            text += f", worst sample {record['cosine_min']:.4f}"
            text += f" (its floor {floor:.4f})" if floor is not None else ""
    return text + "."


def _judged_on(job: dict[str, Any], record: dict[str, Any]) -> str:
    """The inputs a keep_float record was decided on, in words (older records: synthesized)."""
    source = quantize_metrics(job).get("sensitivity_inputs", "synthesized")
    if source == "synthesized":
        return f"{record['samples']} synthesized samples (random token ids, masks of ones)"
    batch = quantize_metrics(job).get("sensitivity_batch_size")
    return f"the {record['samples']} real sentences ({source}, in batches of {batch})"


def _candidates_sentence(candidates: list[dict[str, Any]]) -> str:
    """Every candidate auto tried, as its report measured it (fewer iterations)."""
    parts = []
    for c in candidates:
        if c.get("error"):
            parts.append(f"`{c['name']}` failed ({clean(c['error'], 200)})")
            continue
        speedup = ", ".join(f"{v:.2f}x" for v in c.get("speedup", {}).values())
        cosine = "n/a" if c.get("cosine_mean") is None else f"{c['cosine_mean']:.4f}"
        if c.get("cosine_min") is not None:
            cosine += f" (worst {c['cosine_min']:.4f})"
        state = "chosen" if c.get("chosen") else ("met" if c.get("met") else "not met")
        parts.append(f"`{c['name']}` {speedup}, cosine {cosine}, {state}")
    return "Auto's candidates, as its report measured them: " + "; ".join(parts) + "."
