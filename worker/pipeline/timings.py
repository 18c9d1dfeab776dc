"""Where a job's wall time went, as the report's `timings` (seconds, measured, never estimated).

The supervisor measures what happens before the child exists (queue wait, staging the inputs)
and passes it in the request with the time it started the child; the child measures the rest
with a monotonic clock, phase by phase: its own start (interpreter, jail, imports), preparing the
model, the steps, delivering the result, each part of the benchmark, and building the report.
Publishing the artifacts comes after the report is written, so it is not in it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from worker.sandbox.protocol import SandboxRequest


class Timings:
    def __init__(self, request: SandboxRequest) -> None:
        self.values: dict[str, Any] = {k: round(v, 4) for k, v in request.timings.items()}
        if request.sent_at is not None:
            self.values["sandbox_start_s"] = round(max(time.time() - request.sent_at, 0.0), 4)
        self.benchmark: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def phase(self, name: str, into: dict[str, Any] | None = None) -> Iterator[None]:
        """Time the block as `name` (added up when a phase runs more than once)."""
        target = self.values if into is None else into
        started = time.perf_counter()
        try:
            yield
        finally:
            target[name] = round(target.get(name, 0.0) + time.perf_counter() - started, 4)

    def bench(self, name: str) -> Any:
        """A part of the benchmark: model loads, latency, memory probes, fidelity."""
        return self.phase(name, self.benchmark)

    def report(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        """The report's `timings`: the phases so far, each step's wall time, the child's total."""
        return {
            **self.values,
            "steps": [{"op": s["op"], "wall_s": s["wall_s"]} for s in steps],
            "benchmark": dict(self.benchmark),
            "child_total_s": round(time.perf_counter() - self._started, 4),
        }
