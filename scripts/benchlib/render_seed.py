"""BENCHMARKS.md's seed-network and service sections, from the run's records."""

from __future__ import annotations

from typing import Any

from benchlib.fmt import mb, num, p50, ratio, table, words


def seed_section(seed: dict[str, Any]) -> list[str]:
    """The example network through the example's jobs: one table row per job."""
    c = seed["config"]
    reports = [j["report"] for j in seed["jobs"] if "report" in j]
    batches = reports[0]["benchmark"]["batch_sizes"] if reports else []
    samples = {r["accuracy"]["samples"] for r in reports if r.get("accuracy")}
    header = ["job", "params", "non-zero", "size MB", "zipped MB"]
    header += [f"speedup b{b}" for b in batches] + ["accuracy"]
    rows = [_seed_row(j, batches) for j in seed["jobs"]]
    held_out = f"accuracy on {words([str(s) for s in sorted(samples)])} held-out digits"
    return [
        "## The classic example network (`examples/seed_network.py`)",
        "",
        f"{', '.join(c['layers'])} on {'x'.join(str(d) for d in c['input_shape'])} inputs, "
        f"trained {c['epochs']} epochs on {c['train_samples']} of scikit-learn's digits "
        "(upscaled), uploaded as a torch.export `.pt2`; one job per row, "
        f"{held_out if samples else 'no accuracy measured'}. {_runtimes_sentence(seed['jobs'])}",
        "",
        *table(header, rows),
    ]


def _seed_row(job: dict[str, Any], batches: list[int]) -> list[str]:
    """One job's row: what changed, the speed-ups at each batch size, the accuracy."""
    if "report" not in job:
        return [job["job"], f"{job['status']}: {job['error']}"] + [""] * (4 + len(batches))
    rep = job["report"]
    base, opt, acc = rep["baseline"], rep["optimized"], rep.get("accuracy")
    row = [
        job["job"],
        f"{base['parameters']} -> {opt['parameters']}",
        f"{base['nonzero_parameters']} -> {opt['nonzero_parameters']}",
        f"{mb(base['size_bytes'], '.2f')} -> {mb(opt['size_bytes'], '.2f')}",
        f"{mb(base['compressed_size_bytes'], '.2f')} -> {mb(opt['compressed_size_bytes'], '.2f')}",
    ]
    row += [num(ratio(p50(base, b), p50(opt, b)), ".2f", "x") for b in batches]
    row.append(f"{acc['baseline']:.4f} -> {acc['optimized']:.4f}" if acc else "not measured")
    return row


def _runtimes_sentence(jobs: list[dict[str, Any]]) -> str:
    """Where the original and the results ran, and which row isolates the runtime's share."""
    reports = [j["report"] for j in jobs if "report" in j]
    before = sorted({r["baseline"]["runtime"] for r in reports})
    after = sorted({r["optimized"]["runtime"] for r in reports})
    if not reports or before == after:
        return ""
    text = f"The original runs in {words(before)} and every result in {words(after)}"
    # A job whose only step is a conversion changes the runtime and nothing else.
    only_export = [j["job"] for j in jobs if "report" in j and _ops(j["report"]) == ["export"]]
    if only_export:
        text += f", so the `{only_export[0]}` row is the runtime's own share of each speed-up"
    return text + "."


def _ops(report: dict[str, Any]) -> list[str]:
    """The ops the user asked for (not the conversions ModelPress inserted)."""
    return [s["op"] for s in report["steps"] if not s.get("implicit")]


def service_section(reads: dict[str, Any], mem: dict[str, Any]) -> list[str]:
    """API read latency and the API's memory while it streams a large upload."""
    return [
        "## The service itself",
        "",
        f"- API reads ({words([f'`GET {p}`' for p in reads['paths']])} alternating, "
        f"{reads['n']} sequential requests, embedded SQLite): p50 {reads['p50']:.1f} ms, p99 "
        f"{reads['p99']:.1f} ms.",
        f"- Streaming upload: a {mem['upload_mb']} MB upload (read whole, then refused as unknown "
        f"bytes: {mem['status']}) left the API process at a peak resident set of "
        f"{mem['peak_mb']:.0f} MB ({mem['rss_before_mb']:.0f} MB before): " + _memory_verdict(mem),
    ]


def _memory_verdict(mem: dict[str, Any]) -> str:
    """Whether the peak shows the file went to disk (it grew by well under the upload's size)."""
    grew = mem["peak_mb"] - mem["rss_before_mb"]
    # A tenth of the upload is far above what buffering chunks costs and far below holding it.
    if grew < mem["upload_mb"] / 10:
        return "the file goes to disk, not to memory."
    return f"the process grew by {grew:.0f} MB while it read the upload."
