"""BENCHMARKS.md's PP-OCR pruning + distillation rows, from `docs/bench/real.json`'s
`ocr.prune_distill` record (scripts/benchlib/real_ocr_distill.py measures them)."""

from __future__ import annotations

from typing import Any

from benchlib.fmt import mb, table
from benchlib.render_real_common import clean, iterations, latency_cells, ordered, verdict_text

HEADING = "#### Channel pruning, then distillation (the same detector)"


def prune_distill_section(o: dict[str, Any]) -> list[str]:
    """The heading, what was run, the table, the findings; nothing for an older record."""
    if not o:
        return []
    return [HEADING, "", intro(o), "", *rows_table(o), "", *[f"- {f}" for f in findings(o)]]


def intro(o: dict[str, Any]) -> str:
    c, inputs = o["config"], o["inputs"]
    side = c["train_side"]
    shape = " x ".join(str(d) for d in inputs["train_and_held_out_shape"])
    return (
        f"Two ModelPress jobs on the upload: `prune` (`method: channel`, `ratio: {c['ratio']}`, "
        "L1 importance, kept channels rounded up to multiples of 8) alone, and followed by "
        f"`distill` (teacher: the upload; {c['epochs']} epochs, batch {c['batch_size']}, lr "
        f"{c['lr']}) on {c['train_images']} rendered pages of 1 x {shape} "
        f"({inputs['preprocessing']}; a fifth held out by the step), small so that training "
        "takes minutes on 2 cores. Parameters count the Constant-node weights. Latency: p50 of "
        f"{iterations(o['measured']['rows'])} interleaved runs at batch 1 on a 640 x 640 page. "
        f"Fidelity: per page, the map's cosine to fp32's, on {c['held_out_images']} held-out "
        f"pages at {side} x {side} (rendered from other seeds than the training pages) and on "
        f"the {inputs['evaluation_pages']} evaluation pages of 640 x 640 above (a size the "
        "student was not trained at)."
    )


def rows_table(o: dict[str, Any]) -> list[str]:
    rows = o["measured"]["rows"]
    side = o["config"]["train_side"]
    header = ["variant", "parameters", "size (MB)", "p50 at 640 (ms)", "latency vs fp32"]
    header += [f"map cosine mean / min ({side}, held out)", "map cosine mean / min (640)"]
    header += ["verdict (ModelPress jobs)"]
    lines = []
    for name in ordered(rows, o["jobs"]):
        job = verdict_text(o["jobs"][name]) if name in o["jobs"] else ""
        if name not in rows:
            lines.append([name, "", "", "", "", "", "", job])
            continue
        row, held = rows[name], rows[name]["held_out"]
        cells = [f"{row['parameters']:,}", mb(row["size_bytes"], ".2f")]
        cells += latency_cells(rows, name)
        cells += [f"{held['cosine_mean']:.4f} / {held['cosine_min']:.4f}"]
        cells += [f"{row['cosine_mean']:.4f} / {row['cosine_min']:.4f}", job]
        lines.append([name, *cells])
    return table(header, lines)


def findings(o: dict[str, Any]) -> list[str]:
    """What pruning removed and cost, what distillation gave back, each job's own account."""
    rows, out = o["measured"]["rows"], []
    base = rows["fp32"]["parameters"]
    for name, job in o["jobs"].items():
        if job["status"] != "succeeded":
            error = job.get("error") or {}
            detail = clean(str(error.get("detail")))
            out.append(f"`{name}` {job['status']}: `{error.get('code')}`: {detail}")
            continue
        row = rows[name]
        out.append(
            f"`{name}` (wall time {job['wall_s']:.0f} s): {row['parameters'] / base:.0%} of "
            f"fp32's parameters; {_steps(job)}."
        )
        out += _size_gap(o, name, row)
    return out


def _size_gap(o: dict[str, Any], name: str, row: dict[str, Any]) -> list[str]:
    """Where a distilled student agrees less at 640 than at the size it was trained at."""
    held, side = row["held_out"]["cosine_mean"], o["config"]["train_side"]
    if "distill" not in name or held - row["cosine_mean"] <= 0.05:
        return []
    return [
        f"`{name}` was trained at {side} x {side} only: on the 640 x 640 pages its map cosine is "
        f"{row['cosine_mean']:.4f} against {held:.4f} at {side} (the text is twice as large in "
        "pixels there); distil on pages of the size the detector will run at."
    ]


def _steps(job: dict[str, Any]) -> str:
    """The prune step's groups and the distill step's held-out agreement, from their metrics."""
    parts = []
    for step in job["report"].get("steps", []):
        m = step.get("metrics", {})
        if step["op"].startswith("prune"):
            error = m.get("max_abs_error_vs_masked_reference") or 0.0
            parts.append(
                f"the prune step narrowed {m.get('groups_pruned')} of {m.get('groups_found')} "
                f"channel groups ({m.get('groups_skipped')} left whole), max abs error vs its "
                f"masked reference {error:.1e}"
            )
        elif step["op"] == "distill":
            before, after = m["before"]["agreement"], m["after"]["agreement"]
            parts.append(
                f"the distill step's own held-out map cosine went {before:.4f} -> {after:.4f} "
                f"in {m.get('train_wall_s', 0):.0f} s of training"
            )
    return "; ".join(parts)
