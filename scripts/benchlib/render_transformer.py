"""BENCHMARKS.md's transformer section, from the run's `transformer` record."""

from __future__ import annotations

from typing import Any

from benchlib.fmt import mb, num, p50, ratio, speed, table

# Worst cosines closer than this count as equally faithful (the last printed digit moves).
SAME_COSINE = 1e-5
# Timings of one file further apart than this fraction are worth a warning about noise.
SAME_TIME = 0.1
SCRIPTS = {"script, per-channel": "script_per_channel", "script, ORT defaults": "script_per_tensor"}


def section(t: dict[str, Any]) -> list[str]:
    """The heading, the job-vs-original table, the job-vs-script table and what they show."""
    c = t["config"]
    return [
        f"## Dynamic int8 on a {t['model_bytes'] / 1e6:.0f} MB transformer encoder (ONNX)",
        "",
        f"A {c['layers']}-layer encoder ({c['heads']} heads, feed-forward {c['ffn']}) with a "
        f"{c['vocab']} x {c['width']} embedding (random weights), batch x {c['sequence']} tokens, "
        "quantized by a ModelPress job with default settings, through the API (embedded mode).",
        "",
        *job_table(t["service"]["report"], c["batch_sizes"]),
        "",
        "The same work as a hand-written script in a fresh process (quantize_dynamic, load both, "
        "time both interleaved, compare outputs), with ONNX Runtime's per-channel and its default "
        "(per-tensor) settings:",
        "",
        *script_table(t, c["batch_sizes"]),
        "",
        " ".join(s for s in (overhead_sentence(t["service"]["report"]), spread_sentence(t)) if s),
        "",
        faithfulness_sentence(t),
    ]


def job_table(rep: dict[str, Any], batches: list[int]) -> list[str]:
    """Original vs result as the job's report measured them."""
    base, opt = rep["baseline"], rep["optimized"]
    fid = next(iter(rep["fidelity"]["outputs"].values()))
    size_ratio = num(ratio(opt["size_bytes"], base["size_bytes"]), ".2f", "x")
    rows: list[list[Any]] = [
        ["size (MB)", mb(base["size_bytes"]), mb(opt["size_bytes"]), size_ratio]
    ]
    noise = rep["comparison"].get("noise") or {}
    for b in batches:
        speedup = speed(ratio(p50(base, b), p50(opt, b)), noise.get(str(b)))
        rows.append([f"p50 latency, batch {b} (ms)", num(p50(base, b)), num(p50(opt, b)), speedup])
    noise_text = ", ".join(f"batch {b}: {v:.2f}" for b, v in noise.items()) or "not measured"
    rows.append(["noise control: p50 of a second copy of the original / the original"])
    rows[-1] += ["", "", noise_text]
    cosines = f"{num(fid['cosine_min'], '.6f')} / {num(fid['cosine_mean'], '.6f')}"
    fid_text = f"{cosines}, {num(fid['max_abs_error'], '.4f')}"
    rows.append(["fidelity: cosine min / mean, max abs error", "", fid_text, ""])
    return table(["", "original", "ModelPress int8", "ratio"], rows)


def script_table(t: dict[str, Any], batches: list[int]) -> list[str]:
    """The job's wall time and results beside the two hand-written scripts'."""
    rep = t["service"]["report"]
    base, opt = rep["baseline"], rep["optimized"]
    fid = next(iter(rep["fidelity"]["outputs"].values()))
    header = ["", "wall time (s)", "int8 size (MB)"]
    header += [f"p50 fp32 / int8, batch {b} (ms)" for b in batches] + ["cosine min"]
    job_row = ["ModelPress job (submit to finish)", num(t["service"]["wall_s"], ".1f")]
    job_row += [mb(opt["size_bytes"])]
    job_row += [f"{num(p50(base, b))} / {num(p50(opt, b))}" for b in batches]
    rows = [[*job_row, num(fid["cosine_min"], ".6f")]]
    for name, key in SCRIPTS.items():
        d = t[key]
        lat = [d["latency"][str(b)] for b in batches]
        row = [name, num(d["wall_s"], ".1f"), mb(d["size"])]
        row += [f"{num(x['fp32']['p50'])} / {num(x['int8']['p50'])}" for x in lat]
        rows.append([*row, num(d["fidelity"]["cosine_min"], ".6f")])
    return table(header, rows)


def overhead_sentence(rep: dict[str, Any]) -> str:
    """What the job did beyond the script, as far as its report shows it."""
    extra = ["a sandboxed child process"]
    if rep["comparison"].get("noise"):
        extra.append("a noise-control copy of the original")
    if rep["baseline"].get("memory", {}).get("peak_rss_bytes") is not None:
        extra.append("a separate peak-memory probe per model")
    if rep["fidelity"].get("second_shape"):
        extra.append("fidelity at a second input shape")
    extra.append("the report and the manifest")
    return "The job's wall time includes what the script does not do: " + ", ".join(extra) + "."


def spread_sentence(t: dict[str, Any]) -> str:
    """How far apart the timings of the one fp32 file are: this machine's run-to-run noise."""
    base = t["service"]["report"]["baseline"]
    spans = []
    for b in t["config"]["batch_sizes"]:
        scripts = [t[k]["latency"][str(b)]["fp32"]["p50"] for k in SCRIPTS.values()]
        times = [x for x in (p50(base, b), *scripts) if x]
        if times and max(times) / min(times) > 1 + SAME_TIME:
            spans.append(f"{min(times):.2f} to {max(times):.2f} ms at batch {b}")
    if not spans:
        return ""
    return (
        "The fp32 original is the same file in all three rows, yet its p50 ranged from "
        f"{' and from '.join(spans)}: compare rows with that run-to-run noise in mind."
    )


def faithfulness_sentence(t: dict[str, Any]) -> str:
    """Per-channel vs per-tensor on these weights, and why per-channel is the default."""
    pc = t["script_per_channel"]["fidelity"]["cosine_min"]
    pt = t["script_per_tensor"]["fidelity"]["cosine_min"]
    config = t["service"]["report"]["steps"][0]["config"]
    job = "per-channel" if config.get("per_channel") else "per-tensor"
    given = "per_channel" in t["service"]["spec"]["steps"][0]
    if pc is None or pt is None:
        seen = "The scripts' fidelity was not measured"
    elif abs(pc - pt) < SAME_COSINE:
        seen = "On these random weights per-channel and per-tensor int8 were equally faithful"
    else:
        better = "per-channel" if pc > pt else "per-tensor"
        seen = f"On these random weights {better} int8 was the more faithful"
    return (
        f"{seen} (worst cosine {num(pc, '.6f')} vs {num(pt, '.6f')}). The job quantized "
        f"{job} ({'as its spec asked' if given else 'its default'}): random weights flatter int8, "
        "and `docs/field-notes.md` records how much more faithful per-channel int8 was on real "
        "MiniLM weights."
    )
