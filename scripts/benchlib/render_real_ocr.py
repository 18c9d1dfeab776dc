"""BENCHMARKS.md's PP-OCR detector subsection, from `docs/bench/real.json`'s `ocr` record."""

from __future__ import annotations

from typing import Any

from benchlib.fmt import mb, speed, table, words
from benchlib.render_real_common import (
    INSTALL,
    REFERENCE,
    clean,
    iterations,
    keep_float_record,
    kept_float,
    latency_cells,
    noise,
    ordered,
    p50,
    quantize_metrics,
    report_speed,
    rerun_lines,
    same_file_sentence,
    verdict_text,
)
from benchlib.render_real_ocr_distill import prune_distill_section

HEADING = "### PP-OCRv4 text detector (mobile CNN, batch 1)"


def ocr_section(o: dict[str, Any]) -> list[str]:
    """The heading, what was measured, the direct call's steps, the table, the findings."""
    if "skipped" in o:
        return [HEADING, "", f"Not measured: {o['skipped']} Install them with {INSTALL}."]
    return [
        HEADING,
        "",
        *rerun_lines(o),
        intro(o),
        "",
        *[f"- {a}" for a in attempts(o["direct"]["attempts"])],
        "",
        *ocr_table(o),
        "",
        *[f"- {f}" for f in findings(o)],
        *(["", *prune_distill_section(o["prune_distill"])] if o.get("prune_distill") else []),
    ]


def intro(o: dict[str, Any]) -> str:
    pkg, model, c, inputs = o["package"], o["model"], o["config"], o["inputs"]
    ops = model["ops"]
    names = ("Conv", "Conv (depthwise)", "ConvTranspose", "Resize", "HardSigmoid")
    listed = [f"{ops[k]} {k}" for k in names if k in ops]
    shape = " x ".join(str(d) for d in inputs["shape"])
    rows = o["measured"]["rows"]
    return (
        f"The package `{pkg['name']}` {pkg['version']} ships `{model['file']}` (opset "
        f"{model['opset']}; {words(listed)}; its weights are Constant nodes: "
        f"{model['initializers']} initializers). Inputs: {c['calibration_images']} calibration "
        f"and {c['evaluation_images']} evaluation pages of {c['image'][0]} x {c['image'][1]}, "
        f"rendered with {inputs['rendered_with']} (lines of the benchmark's sentences, boxes, "
        f"noise, blur: synthetic, not photographs), through {inputs['preprocessing']}: 1 x "
        f"{shape}. Fidelity: per evaluation page, the cosine of the probability map to fp32's "
        f"and the IoU of the text mask at the package's threshold {c['text_threshold']}. "
        f"Latency: p50 of {iterations(rows)} interleaved runs per row at batch 1 (1-minute load "
        f"average {o['measured']['load_average_1min_before']:.2f} as the timing began). The "
        f'ModelPress job had `constraints: {{"min_cosine": {c["min_cosine"]}}}`, the calibration '
        "pages as `calibration_dataset_id` and the evaluation pages (`labels` = fp32's maps, "
        "metric `cosine`) as `evaluation`. The direct call is ONNX Runtime's `quantize_static` "
        "as a script would write it (QDQ, per-channel, its other defaults: int8 activations, "
        "min-max calibration, one page per calibration call), step by step:"
    )


def attempts(tried: list[dict[str, Any]]) -> list[str]:
    """Each step of the direct call: done (and how long), or refused with ONNX Runtime's error."""
    out = []
    for a in tried:
        if a["ok"]:
            took = f" ({a['wall_s']:.1f} s)" if a.get("wall_s") is not None else ""
            out.append(f"`{a['step']}`: done{took}.")
        else:
            out.append(f"`{a['step']}` refused: `{clean(a['error'])}`")
    return out


def ocr_table(o: dict[str, Any]) -> list[str]:
    rows = o["measured"]["rows"]
    header = ["variant", "size (MB)", "p50 (ms)", "latency vs fp32", "map cosine mean / min"]
    header += ["text-mask IoU mean / min", "verdict (ModelPress jobs)"]
    lines = []
    for name in ordered(rows, o["jobs"]):
        job = verdict_text(o["jobs"][name]) if name in o["jobs"] else ""
        if name not in rows:  # a failed job has no file to measure
            lines.append([name, "", "", "", "", "", job])
            continue
        row = rows[name]
        cosine = f"{row['cosine_mean']:.4f} / {row['cosine_min']:.4f}"
        iou = f"{row['mask_iou_mean']:.3f} / {row['mask_iou_min']:.3f}"
        lines.append([name, mb(row["size_bytes"]), *latency_cells(rows, name), cosine, iou, job])
    return table(header, lines)


def findings(o: dict[str, Any]) -> list[str]:
    """Whether int8 paid off on this CNN, and whether each job's verdict said so."""
    rows, out = o["measured"]["rows"], []
    base = p50(rows["fp32"])
    for name, row in rows.items():
        if name in REFERENCE or not p50(row) or not base:
            continue
        ratio, band = p50(row) / base, abs((noise(rows) or 1.0) - 1)
        pace = speed(1 / ratio, noise(rows))
        if ratio - 1 > band:
            pace = f"int8 is {ratio:.2f}x SLOWER than fp32 on this CNN"
        elif 1 - ratio <= band:
            pace += ": no speed-up to speak of"
        out.append(
            f"`{name}`: {ratio:.2f}x fp32's latency ({pace}), map cosine mean "
            f"{row['cosine_mean']:.4f}, text-mask IoU {row['mask_iou_mean']:.3f}."
        )
    if not o["direct"]["produced"]:
        out.append("The direct call produced no int8 model that ONNX Runtime loads.")
    for name, job in o["jobs"].items():
        out.append(_job_sentence(o, name, job))
        line = target_line(o, name, job)
        if line:
            out.append(line)
        samples = job["spec"]["steps"][0].get("calibration_samples")
        if samples is not None and job is not next(iter(o["jobs"].values())):
            out.append(
                f"`{name}` is the job as specified run again with `calibration_samples: "
                f"{samples}`, as a user would after `resource_exhausted`: calibration then reads "
                f"{samples} pages at a time instead of 16, and it "
                f"{'fit' if job['status'] == 'succeeded' else 'still did not fit'} within the "
                "sandbox's memory limit (`MODELPRESS_SANDBOX_MEMORY_MB`, 12288 MB by default); "
                "ModelPress warns that ranges from fewer than 32 samples are unreliable."
            )
    same = same_file_sentence(rows)
    return [*out, *([same] if same else [])]


def _job_sentence(o: dict[str, Any], name: str, job: dict[str, Any]) -> str:
    """The job's verdict against what this benchmark measured of its file (the guard's test)."""
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        return (
            f"`{name}` {job['status']} after {job['wall_s']:.0f} s: `{error.get('code')}`: "
            f"{clean(str(error.get('detail')))}"
        )
    rows, target = o["measured"]["rows"], o["config"]["min_cosine"]
    met, row = job["report"]["verdict"]["met"], rows[name]
    text = f"`{name}` (wall time {job['wall_s']:.0f} s): {_step_facts(job)}; {report_speed(job)}"
    text += f"; verdict met: {str(met).lower()}"
    ratio = p50(row) / p50(rows["fp32"])
    slower = ratio - 1 > abs((noise(rows) or 1.0) - 1)
    below = row["cosine_mean"] < target
    if (slower or below) and met:
        return (
            f"{text}. The guard did NOT flag it, yet this benchmark measured it "
            f"{'slower than fp32 beyond the noise' if slower else ''}"
            f"{' and ' if slower and below else ''}{f'below {target}' if below else ''} "
            f"({ratio:.2f}x fp32's latency, map cosine mean {row['cosine_mean']:.4f})."
        )
    if slower or below:
        return f"{text}, as it should be: this benchmark measured it {ratio:.2f}x fp32's latency."
    return f"{text}; this benchmark measured it neither slower than fp32 nor below {target}."


def _step_facts(job: dict[str, Any]) -> str:
    """What the quantize step did, from its own metrics."""
    m, kf = quantize_metrics(job), keep_float_record(job)
    text = (
        f"{m.get('nodes_quantized')} node(s) quantized, {len(kept_float(job))} left float, "
        f"{m.get('activation_type')} activations and {m.get('weight_type')} weights (the direct "
        f"call: ONNX Runtime's default int8 activations), calibrated on "
        f"{m.get('calibration_samples')} page(s)"
    )
    if kf:
        measured = kf["candidates"] - (kf.get("unmeasured") or 0)
        text += (
            f"; `keep_float: auto` measured the sensitivity of {measured} of {kf['candidates']} "
            f"nodes within its budget, kept {len(kf['kept_float'])} float for fidelity (cosine "
            f"{kf['cosine_mean']:.4f} on {kf['samples']} calibration page(s))"
        )
        text += _for_speed(kf) + _whole(kf)
    return text


def _whole(kf: dict[str, Any]) -> str:
    """The step's last check: the whole chosen int8 model timed against float."""
    timed = kf.get("whole_model_timing")
    if not timed:
        return ""
    at = ", ".join(
        f"batch {r['batch']}: int8 {r['int8_p50_ms']:.1f} ms vs float {r['float_p50_ms']:.1f} ms"
        for r in timed
    )
    kept = "kept the model float" if kf.get("int8_pays") is False else "kept int8"
    return f"; it then timed the whole chosen model against float ({at}) and {kept}"


SPEED_TARGET = 1.3  # the issue's: static int8 at least this much faster than fp32 at batch 1


def target_line(o: dict[str, Any], name: str, job: dict[str, Any]) -> str | None:
    """A `keep_float: auto` job against the target: >= 1.3x faster than fp32 at map cosine
    >= min_cosine, or float where int8 cannot pay (never slower); by how much where missed."""
    rows, kf = o["measured"]["rows"], keep_float_record(job)
    if not kf or name not in rows or job["status"] != "succeeded":
        return None
    faster = p50(rows["fp32"]) / p50(rows[name])
    cosine, floor = rows[name]["cosine_mean"], o["config"]["min_cosine"]
    slower = 1 / faster - 1 > abs((noise(rows) or 1.0) - 1)
    head = f"Target (>= {SPEED_TARGET}x faster than fp32 at map cosine >= {floor}, or float where "
    head += (
        f"int8 cannot pay, never slower): `{name}` measured {speed(faster, noise(rows))} at map "
        f"cosine {cosine:.4f}"
    )
    if faster >= SPEED_TARGET and cosine >= floor:
        return f"{head} (met)."
    if kf.get("int8_pays") is False and not slower:
        return f"{head}: int8 did not pay here and the job kept the model float (met)."
    if slower:
        return f"{head}: slower than fp32 beyond the noise (missed)."
    slow = [t for t, v in kf.get("op_type_timing", {}).items() if v.get("slower")]
    whole = (kf.get("whole_model_timing") or [{}])[0]
    slow_types = words(slow) if slow else "no op type"
    floated = len(kf.get("kept_float_for_speed", []))
    return (
        f"{head}: faster, not slower, but {SPEED_TARGET - faster:.2f}x short of "
        f"{SPEED_TARGET}x (missed). Why, by the step's own measurements on this CPU: int8 pays "
        f"little on this CNN at batch 1: {slow_types} timed slower in int8 than float (kept "
        f"float: {floated} nodes), and the "
        f"whole chosen model timed int8 {whole.get('int8_p50_ms', 0):.1f} ms vs float "
        f"{whole.get('float_p50_ms', 0):.1f} ms at batch {whole.get('batch')}, so it kept int8 "
        "(faster, smaller), not float."
    )


def _for_speed(kf: dict[str, Any]) -> str:
    """The op types `keep_float: auto` kept float because their int8 form timed slower."""
    slow = {t: v for t, v in kf.get("op_type_timing", {}).items() if v.get("slower")}
    if not slow:
        return " and none for speed"
    timed = ", ".join(
        f"{t}: int8 {v['int8_p50_ms']:.0f} ms vs float {v['float_p50_ms']:.0f} ms"
        for t, v in slow.items()
    )
    count = len(kf.get("kept_float_for_speed", []))
    return f" and {count} for speed, the op type(s) its own timing found slower in int8 ({timed})"
