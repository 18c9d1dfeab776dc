"""Render a job report as one self-contained HTML page: inline CSS and SVG, no external request.

Every value taken from the report is HTML-escaped (the model name is user input), and a missing
key or a None value renders as "not measured".
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

NOT_MEASURED = "not measured"
# The page needs nothing from outside: forbid every fetch and every script, even injected ones.
_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}th{background:#f4f4f4}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
.verdict{font-size:1.4em;font-weight:bold;padding:.6em 1em;border-radius:6px;display:inline-block}
.met{background:#dff3e0;color:#135d1b}.unmet{background:#fbe1e1;color:#8a1414}
.unknown{background:#eee;color:#444}footer{color:#777;margin:2em 0}
"""
_COLORS = {"baseline": "#8a8f98", "optimized": "#2f6fb0"}
_W, _H, _LEFT, _TOP, _PLOT_W, _PLOT_H, _HEADROOM = 640, 240, 90, 24, 530, 176, 1.15
_FIDELITY_KEYS = ["max_abs_error", "mean_abs_error", "cosine_min", "cosine_mean", "top1_agreement"]
_ENV_KEYS = ["cpu_model", "cpu_flags", "cores", "threads", "python", "platform", "device"]
_BENCH_KEYS = ["batch_sizes", "iterations", "warmup", "threads", "interleaved", "input_shapes"]
_VERDICTS = {True: ("met", "Targets met"), False: ("unmet", "Targets not met")}
_NO_VERDICT = ("unknown", "No verdict: no targets were given or none was measured")
Bar = tuple[str, str, tuple[float | None, ...]]  # group, side, (value) or (value, low, high)


def render_html(report: dict) -> str:
    """Render a report dict as a self-contained HTML page."""
    report = _dict(report)
    model = _dict(report.get("model"))
    title = f"ModelPress report: {_text(model.get('name'))} (job {_text(report.get('job_id'))})"
    sections = [
        f"<h1>{title}</h1>",
        _verdict_section(_dict(report.get("verdict"))),
        "<p>Model: "
        + ", ".join(f"{k} {_text(model.get(k))}" for k in ("id", "format", "sha256"))
        + "</p>",
        _comparison_section(report),
        _charts_section(report),
        _fidelity_section(_dict(report.get("fidelity"))),
        _accuracy_section(report.get("accuracy")),
        _steps_section(report.get("steps")),
        _candidates_section(report.get("candidates")),
        _environment_section(report),
        f"<footer>Report schema {_text(report.get('schema_version'))}</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(section for section in sections if section)
        + "\n</body></html>\n"
    )


def _get(data: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(data, dict):
            return None
        # Reports built in Python may key batch sizes by int before a JSON round trip.
        data = data.get(key, data.get(int(key)) if key.isdigit() else None)
    return data


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _plain(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(item) for item in value) or "none"
    return NOT_MEASURED if value is None else str(value)


def _text(value: object, unit: str = "") -> str:
    """Escape a report value for HTML, with a unit unless it was not measured."""
    return html.escape(_plain(value) + (unit if value is not None else ""))


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _bytes_plain(value: object) -> str:
    number = _number(value)
    if number is None:
        return _plain(value)
    if abs(number) < 1000:
        return f"{number:.0f} B"
    for unit in ("kB", "MB", "GB"):
        number /= 1000
        if abs(number) < 1000 or unit == "GB":
            break
    return f"{number:.3g} {unit}"


def _bytes(value: object) -> str:
    return html.escape(_bytes_plain(value))


def _ratio(value: object) -> str:
    number = _number(value)
    return html.escape(f"{number:.2f}x") if number is not None else _text(value)


def _ms(value: object) -> str:
    return _text(value, " ms")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Lay out a table; headers are plain text, cells are already-escaped HTML."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict_section(verdict: dict) -> str:
    met = verdict.get("met")
    css, label = _VERDICTS[met] if isinstance(met, bool) else _NO_VERDICT
    parts = [f'<div class="verdict {css}">{label}</div>']
    for key in ("reasons", "notes"):
        items = verdict.get(key)
        if isinstance(items, list) and items:
            lis = "".join(f"<li>{_text(item)}</li>" for item in items)
            parts.append(f"<p>{key.capitalize()}:</p><ul>{lis}</ul>")
    return "".join(parts)


def _batch_keys(*maps: object) -> list[str]:
    """Collect the batch sizes keyed in any of the maps, in numeric order."""
    keys = {str(key) for m in maps if isinstance(m, dict) for key in m}
    return sorted(keys, key=lambda k: (0, int(k), k) if k.isdigit() else (1, 0, k))


def _comparison_section(report: dict) -> str:
    sides = [_dict(report.get("baseline")), _dict(report.get("optimized"))]
    comparison = _dict(report.get("comparison"))
    rows = [[label, *(fmt(s.get(key)) for s in sides), ""] for key, label, fmt in _SIDE_FIELDS]
    rows[2][3] = _ratio(comparison.get("size_ratio"))
    latency = [s.get("latency_ms") for s in sides]
    throughput = [s.get("throughput") for s in sides]
    for batch in _batch_keys(*latency, *throughput, comparison.get("speedup")):
        tag = f"Batch {html.escape(batch)}"
        for stat in ("p50", "p90", "p99", "mean"):
            rows.append(
                [f"{tag} latency {stat}", *(_ms(_get(m, batch, stat)) for m in latency), ""]
            )
        speedup = _ratio(_get(comparison, "speedup", batch))
        cells = [_text(_get(m, batch), " samples/s") for m in throughput]
        rows.append([f"{tag} throughput (change: speedup)", *cells, speedup])
    return "<h2>Baseline vs optimized</h2>" + _table(["", "Baseline", "Optimized", "Change"], rows)


_SIDE_FIELDS: list[tuple[str, str, Callable[[object], str]]] = [
    ("format", "Format", _text),
    ("runtime", "Runtime", _text),
    ("size_bytes", "Size (change: size ratio)", _bytes),
    ("compressed_size_bytes", "Compressed size", _bytes),
    ("parameters", "Parameters", _text),
    ("nonzero_parameters", "Non-zero parameters", _text),
    ("load_ms", "Load time", _ms),
]


def _charts_section(report: dict) -> str:
    sides = {side: _dict(report.get(side)) for side in _COLORS}
    size_bars: list[Bar] = [
        (group, side, (_number(data.get(key)),))
        for group, key in (("size", "size_bytes"), ("compressed", "compressed_size_bytes"))
        for side, data in sides.items()
    ]
    latency = {side: data.get("latency_ms") for side, data in sides.items()}
    latency_bars: list[Bar] = [
        (f"batch {b}", side, tuple(_number(_get(m, b, s)) for s in ("p50", "p90", "p99")))
        for b in _batch_keys(*latency.values())
        for side, m in latency.items()
    ]
    return (
        "<h2>Size</h2>"
        + _bar_chart(size_bars, _bytes_plain)
        + "<h2>Latency p50 per batch size (whiskers: p90 to p99)</h2>"
        + _bar_chart(latency_bars, lambda v: f"{v:.3g} ms")
    )


def _svg(body: str = "") -> str:
    body = body or f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle">{NOT_MEASURED}</text>'
    return f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img">{body}</svg>'


def _y(value: float, peak: float) -> float:
    return _TOP + _PLOT_H * (1 - value / peak)


def _axes(peak: float, fmt: Callable[[float], str], legend: dict[str, str] = _COLORS) -> str:
    base = _TOP + _PLOT_H
    parts = [f'<path d="M{_LEFT} {_TOP}V{base}H{_W - 10}" fill="none" stroke="#444"/>']
    for fraction in (0.0, 0.5, 1.0):
        y = _y(peak * fraction, peak)
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
            f"{html.escape(fmt(peak * fraction))}</text>"
        )
    for i, (name, color) in enumerate(legend.items()):
        parts.append(
            f'<rect x="{_W - 190 + 95 * i}" y="4" width="10" height="10" fill="{color}"/>'
            f'<text x="{_W - 176 + 95 * i}" y="13" font-size="11">{name}</text>'
        )
    return "".join(parts)


def _bar_chart(bars: list[Bar], fmt: Callable[[float], str]) -> str:
    """Draw bars grouped by their group label, each with an optional low-high whisker."""
    # Headroom above the tallest bar or whisker keeps its value label clear of the legend.
    peak = _HEADROOM * max((v for b in bars for v in (b[2][0], b[2][-1]) if v), default=0.0)
    if peak <= 0:
        return _svg()
    groups = list(dict.fromkeys(bar[0] for bar in bars))
    # Each group takes one slot per side plus one empty slot as a gap.
    slot = _PLOT_W / (len(groups) * (len(_COLORS) + 1))
    parts = [_axes(peak, fmt)]
    for index, group in enumerate(groups):
        x = _LEFT + slot * (index * (len(_COLORS) + 1) + 1.5)
        parts.append(
            f'<text x="{x:.1f}" y="{_H - 22}" text-anchor="middle">{html.escape(group)}</text>'
        )
    for group, side, values in bars:
        x = _LEFT + slot * (groups.index(group) * (len(_COLORS) + 1) + list(_COLORS).index(side))
        parts.append(_bar(x + slot * 0.5, slot * 0.9, values, peak, side, fmt))
    return _svg("".join(parts))


def _bar(
    x: float, width: float, values: tuple, peak: float, side: str, fmt: Callable[[float], str]
) -> str:
    value, low, high = (*values, None, None)[:3]
    if value is None:
        return f'<text x="{x + width / 2:.1f}" y="{_TOP + _PLOT_H - 4}" font-size="10">n/m</text>'
    top, mid = _y(value, peak), x + width / 2
    parts = [
        f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{_TOP + _PLOT_H - top:.1f}"'
        f' fill="{_COLORS[side]}"><title>{html.escape(f"{side}: {fmt(value)}")}</title></rect>'
    ]
    if low is not None and high is not None:
        y_low, y_high = _y(low, peak), _y(high, peak)
        parts.append(
            f'<path d="M{mid - 4:.1f} {y_high:.1f}h8M{mid:.1f} {y_high:.1f}V{y_low:.1f}'
            f'M{mid - 4:.1f} {y_low:.1f}h8" stroke="#111"/>'
        )
        top = min(top, y_high)
    parts.append(f'<text x="{mid:.1f}" y="{top - 4:.1f}" text-anchor="middle" font-size="10">')
    return "".join(parts) + html.escape(fmt(value)) + "</text>"


def _scatter(points: list[tuple[str, float, float, bool]]) -> str:
    """Plot candidates by size (x) and p50 latency (y); the chosen one is drawn larger."""
    if not points:
        return _svg()
    x_peak = max(p[1] for p in points) or 1.0
    y_peak = _HEADROOM * max(p[2] for p in points) or 1.0
    parts = [
        _axes(y_peak, lambda v: f"{v:.3g} ms", {"candidate": "#8a8f98", "chosen": "#2f6fb0"}),
        f'<text x="{_LEFT + _PLOT_W / 2}" y="{_H - 22}" text-anchor="middle" font-size="11">'
        f"size, 0 to {html.escape(_bytes_plain(x_peak))}</text>",
    ]
    for name, size, latency, chosen in points:
        cx, cy = _LEFT + _PLOT_W * 0.85 * size / x_peak, _y(latency, y_peak)
        color = _COLORS["optimized" if chosen else "baseline"]
        parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{7 if chosen else 4}" fill="{color}"/>'
            f'<text x="{cx + 8:.1f}" y="{cy + 4:.1f}" font-size="10">{html.escape(name)}</text>'
        )
    return _svg("".join(parts))


def _fidelity_section(fidelity: dict) -> str:
    keys = [*_FIDELITY_KEYS, "nan_or_inf", "shape_match"]
    outputs = _dict(fidelity.get("outputs")) or {NOT_MEASURED: {}}
    rows = [
        [_text(name), *(_text(_get(stats, k)) for k in keys)] for name, stats in outputs.items()
    ]
    inputs, samples = _text(fidelity.get("inputs")), _text(fidelity.get("samples"))
    summary = f"<h2>Fidelity</h2><p>Inputs: {inputs}; samples: {samples}</p>"
    return summary + _table(["output", *keys], rows)


def _accuracy_section(accuracy: object) -> str:
    if not isinstance(accuracy, dict) or not accuracy:
        return ""
    keys = ["metric", "baseline", "optimized", "drop"]
    return "<h2>Accuracy</h2>" + _table(keys, [[_text(accuracy.get(k)) for k in keys]])


def _steps_section(steps: object) -> str:
    rows = []
    for index, step in enumerate(steps if isinstance(steps, list) else [], start=1):
        step, warnings = _dict(step), _dict(step).get("warnings")
        formats = f"{_text(step.get('input_format'))} &rarr; {_text(step.get('output_format'))}"
        notes = [_text(w) for w in warnings] if isinstance(warnings, list) else []
        cells = [_text(step.get(k)) for k in ("op", "pass_version", "config", "metrics")]
        rows.append([str(index), *cells, _text(step.get("wall_s"), " s"), formats])
        rows[-1].append("<br>".join(notes) or "none")
    if not rows:
        return "<h2>Steps</h2><p>No steps were recorded.</p>"
    headers = ["#", "Op", "Version", "Config", "What it did", "Wall time", "Formats", "Warnings"]
    return "<h2>Steps</h2>" + _table(headers, rows)


def _candidates_section(candidates: object) -> str:
    if not isinstance(candidates, list) or not candidates:
        return ""
    rows, points = [], []
    for cand in map(_dict, candidates):
        latency = _dict(cand.get("latency_ms_p50"))
        rows.append([_text(cand.get(k)) for k in ("name", "steps", "accuracy", "met", "chosen")])
        rows[-1][2:2] = [_bytes(cand.get("size_bytes")), _text(latency or None)]
        size = _number(cand.get("size_bytes"))
        first = _number(_get(latency, "1") or next(iter(latency.values()), None))
        if size is not None and first is not None:
            points.append((_plain(cand.get("name")), size, first, cand.get("chosen") is True))
    headers = ["Name", "Steps", "Size", "p50 ms by batch", "Accuracy", "Met", "Chosen"]
    return (
        "<h2>Candidates</h2>"
        + _table(headers, rows)
        + "<p>Size vs p50 latency (batch 1, else the first batch size measured)</p>"
        + _scatter(points)
    )


def _environment_section(report: dict) -> str:
    env, bench = _dict(report.get("environment")), _dict(report.get("benchmark"))
    rows = [[key, _text(env.get(key))] for key in [*_ENV_KEYS, "execution_provider"]]
    rows.append(["memory", _bytes(env.get("memory_bytes"))])
    rows += [
        [f"{_text(name)} version", _text(v)] for name, v in _dict(env.get("libraries")).items()
    ]
    bench_rows = [[key, _text(bench.get(key))] for key in _BENCH_KEYS]
    return (
        "<h2>Environment</h2>"
        + _table(["", "value"], rows)
        + "<h2>Benchmark settings</h2>"
        + _table(["", "value"], bench_rows)
    )
