"""Small formatting helpers shared by the renderers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table: one header row, the separator, then the rows."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def num(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    """A number with a format spec, or `n/a` where it was not measured."""
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def mb(size_bytes: float | None, spec: str = ".1f") -> str:
    """Bytes as decimal megabytes."""
    return num(None if size_bytes is None else size_bytes / 1e6, spec)


def p50(facts: dict[str, Any], batch: int | str) -> float | None:
    """The median latency (ms) of one report measurement at one batch size."""
    stats = facts.get("latency_ms", {}).get(str(batch)) or {}
    return stats.get("p50")


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either is missing or b is zero."""
    return None if a is None or not b else a / b


def words(items: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def speed(speedup: float | None, noise: float | None = None) -> str:
    """A speed-up as `1.29x faster` / `1.05x slower`, flagged when the noise control is as large."""
    if speedup is None:
        return "n/a"
    if f"{speedup:.2f}" == "1.00":
        text = "1.00x (the same)"
    elif speedup > 1:
        text = f"{speedup:.2f}x faster"
    else:
        text = f"{1 / speedup:.2f}x slower"
    # The report's own rule: a difference no larger than two copies of the original differ by.
    if noise is not None and abs(speedup - 1) <= abs(noise - 1):
        text += ", within the noise"
    return text
