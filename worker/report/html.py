"""Render a job report as one self-contained HTML page: inline CSS and SVG, no external request.

The markup lives in `templates/report.html.j2`, rendered with autoescape on (the model name and
every step warning are user or model input); this module formats values and computes the charts'
geometry. A value the worker could not measure (None) renders as "not measured".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined

from app.artifacts.schemas import REPORT_CSP, ModelMeasurement, Report

NOT_MEASURED = "not measured"
COLORS = {"baseline": "#8a8f98", "optimized": "#2f6fb0"}
_SCATTER_LEGEND = {"candidate": COLORS["baseline"], "chosen": COLORS["optimized"]}
# Headroom above the tallest bar or whisker keeps its value label clear of the legend.
_HEADROOM = 1.15
Bar = tuple[str, str, tuple[float | None, ...]]  # group, side, (value) or (value, low, high)
Point = tuple[str, float, float, bool]  # name, size, latency, chosen
Fmt = Callable[[float], str]


@dataclass(frozen=True)
class Frame:
    """The plot area every chart shares, in SVG user units."""

    width: int = 640
    height: int = 240
    left: int = 90
    top: int = 24
    plot_width: int = 530
    plot_height: int = 176

    @property
    def base(self) -> int:
        """The y of the x axis."""
        return self.top + self.plot_height

    def y(self, value: float, peak: float) -> float:
        """The y of `value` on an axis that runs from 0 to `peak`."""
        return self.top + self.plot_height * (1 - value / peak)


FRAME = Frame()


@dataclass(frozen=True)
class Tick:
    """A value label on the y axis."""

    y: float
    label: str


@dataclass(frozen=True)
class Swatch:
    """One legend entry: a colored square and its name."""

    x: int
    name: str
    color: str


@dataclass(frozen=True)
class BarMark:
    """One bar; `top` is None when its value was not measured."""

    x: float
    width: float
    top: float | None
    color: str
    title: str
    label: str
    label_y: float
    whisker: tuple[float, float] | None  # (y of the high end, y of the low end)

    @property
    def mid(self) -> float:
        """The bar's horizontal center."""
        return self.x + self.width / 2


@dataclass(frozen=True)
class Dot:
    """One candidate on the size/latency scatter."""

    cx: float
    cy: float
    r: int
    color: str
    name: str


@dataclass(frozen=True)
class Chart:
    """Everything the template's chart macro draws; None stands for an empty chart."""

    ticks: list[Tick]
    legend: list[Swatch]
    groups: list[tuple[float, str]]  # x and label of each bar group, under the x axis
    bars: list[BarMark]
    dots: list[Dot]
    x_label: str = ""


def plain(value: object) -> str:
    """Format a report value as text (escaping is the template's job)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}={plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(plain(item) for item in value) or "none"
    return NOT_MEASURED if value is None else str(value)


def with_unit(value: object, unit: str) -> str:
    """Format a value with its unit, unless it was not measured."""
    return plain(value) + (unit if value is not None else "")


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def size(value: object) -> str:
    """Format a byte count with a decimal unit (kB = 1000 bytes)."""
    number = _number(value)
    if number is None:
        return plain(value)
    if abs(number) < 1000:
        return f"{number:.0f} B"
    for unit in ("kB", "MB", "GB"):
        number /= 1000
        if abs(number) < 1000 or unit == "GB":
            break
    return f"{number:.3g} {unit}"


def ratio(value: object) -> str:
    """Format a ratio as `1.78x`."""
    number = _number(value)
    return f"{number:.2f}x" if number is not None else plain(value)


def _ms(value: float) -> str:
    return f"{value:.3g} ms"


def latency_stat(side: ModelMeasurement, batch: str, stat: str) -> float | None:
    """One latency statistic of one side at one batch size; None where it was not measured."""
    stats = side.latency_ms.get(batch)
    return None if stats is None else getattr(stats, stat, None)


def batch_keys(*maps: Mapping[str, object] | None) -> list[str]:
    """Collect the batch sizes keyed in any of the maps, in numeric order."""
    keys = {str(key) for m in maps if m for key in m}
    return sorted(keys, key=lambda k: (0, int(k), k) if k.isdigit() else (1, 0, k))


def _axes(peak: float, fmt: Fmt, legend: dict[str, str]) -> tuple[list[Tick], list[Swatch]]:
    ticks = [Tick(FRAME.y(peak * f, peak), fmt(peak * f)) for f in (0.0, 0.5, 1.0)]
    swatches = [
        Swatch(FRAME.width - 190 + 95 * i, name, color)
        for i, (name, color) in enumerate(legend.items())
    ]
    return ticks, swatches


def bar_chart(bars: list[Bar], fmt: Fmt) -> Chart | None:
    """Lay out bars grouped by their group label, each with an optional low-high whisker."""
    peak = _HEADROOM * max((v for b in bars for v in (b[2][0], b[2][-1]) if v), default=0.0)
    if peak <= 0:
        return None
    groups = list(dict.fromkeys(bar[0] for bar in bars))
    # Each group takes one slot per side plus one empty slot as a gap.
    per_group = len(COLORS) + 1
    slot = FRAME.plot_width / (len(groups) * per_group)
    labels = [(FRAME.left + slot * (i * per_group + 1.5), group) for i, group in enumerate(groups)]
    marks = []
    for group, side, values in bars:
        x = FRAME.left + slot * (groups.index(group) * per_group + list(COLORS).index(side))
        marks.append(_bar(x + slot * 0.5, slot * 0.9, values, peak, side, fmt))
    ticks, legend = _axes(peak, fmt, COLORS)
    return Chart(ticks, legend, labels, marks, [])


def _bar(
    x: float, width: float, values: tuple[float | None, ...], peak: float, side: str, fmt: Fmt
) -> BarMark:
    value, low, high = (*values, None, None)[:3]
    if value is None:
        return BarMark(x, width, None, COLORS[side], "", "n/m", FRAME.base - 4, None)
    top = label_top = FRAME.y(value, peak)
    whisker = None
    if low is not None and high is not None:
        whisker = (FRAME.y(high, peak), FRAME.y(low, peak))
        label_top = min(top, whisker[0])
    title = f"{side}: {fmt(value)}"
    return BarMark(x, width, top, COLORS[side], title, fmt(value), label_top - 4, whisker)


def scatter(points: list[Point]) -> Chart | None:
    """Plot candidates by size (x) and p50 latency (y); the chosen one is drawn larger."""
    if not points:
        return None
    x_peak = max(p[1] for p in points) or 1.0
    y_peak = _HEADROOM * max(p[2] for p in points) or 1.0
    dots = [
        Dot(
            FRAME.left + FRAME.plot_width * 0.85 * size_ / x_peak,
            FRAME.y(latency, y_peak),
            7 if chosen else 4,
            COLORS["optimized" if chosen else "baseline"],
            name,
        )
        for name, size_, latency, chosen in points
    ]
    ticks, legend = _axes(y_peak, _ms, _SCATTER_LEGEND)
    return Chart(ticks, legend, [], [], dots, f"size, 0 to {size(x_peak)}")


def _size_chart(report: Report) -> Chart | None:
    sides = {"baseline": report.baseline, "optimized": report.optimized}
    bars: list[Bar] = [
        (group, side, (_number(getattr(data, key)),))
        for group, key in (("size", "size_bytes"), ("compressed", "compressed_size_bytes"))
        for side, data in sides.items()
    ]
    return bar_chart(bars, size)


def _latency_chart(report: Report) -> Chart | None:
    sides = {"baseline": report.baseline, "optimized": report.optimized}
    bars: list[Bar] = [
        (f"batch {b}", side, tuple(_number(latency_stat(m, b, s)) for s in ("p50", "p90", "p99")))
        for b in batch_keys(*(m.latency_ms for m in sides.values()))
        for side, m in sides.items()
    ]
    return bar_chart(bars, _ms)


def _candidate_points(report: Report) -> list[Point]:
    points = []
    for cand in report.candidates or []:
        latency = cand.latency_ms_p50 or {}
        size_ = _number(cand.size_bytes)
        first = _number(latency.get("1") or next(iter(latency.values()), None))
        if size_ is not None and first is not None:
            points.append((plain(cand.name), size_, first, cand.chosen is True))
    return points


_TEMPLATES = Environment(
    loader=PackageLoader("worker.report", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_TEMPLATES.filters.update(plain=plain, unit=with_unit, size=size, ratio=ratio)
_TEMPLATES.filters.update(ms=lambda value: with_unit(value, " ms"), px=lambda value: f"{value:.1f}")
_TEMPLATES.globals.update(frame=FRAME, latency_stat=latency_stat, csp=REPORT_CSP)


def render_html(report: Report) -> str:
    """Render a validated report as a self-contained HTML page."""
    sides = [report.baseline, report.optimized]
    return _TEMPLATES.get_template("report.html.j2").render(
        report=report,
        sides=sides,
        batches=batch_keys(
            *(s.latency_ms for s in sides),
            *(s.throughput for s in sides),
            report.comparison.speedup,
        ),
        size_chart=_size_chart(report),
        latency_chart=_latency_chart(report),
        scatter=scatter(_candidate_points(report)),
    )
