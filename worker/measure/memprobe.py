"""Peak memory of one model, measured alone: `python -m worker.measure.memprobe <request.json>`.

Two models measured in one process cannot be told apart by RSS, so each gets a short-lived
process of its own (started from the sandbox, whose limits it inherits): it loads the model,
runs it a few times at the given batch size, and prints its peak resident set (VmHWM).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from worker.measure.inputs import synthesize_from_specs
from worker.runtimes import loaded as runtimes

RUNS = 3


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def probe(path: Path, fmt: str, specs: list[dict[str, Any]], feeds_request: dict[str, Any]) -> int:
    """Run `python -m worker.measure.memprobe` on one model; its peak RSS in bytes."""
    request = {"path": str(path), "format": fmt, "specs": specs, **feeds_request}
    done = subprocess.run(
        [sys.executable, "-m", "worker.measure.memprobe", json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_bytes"])


def main(raw: str) -> None:
    request = json.loads(raw)
    loaded = runtimes.load(
        Path(request["path"]),
        request["format"],
        request["specs"],
        request["threads"],
        request.get("device", "cpu"),
    )
    feeds = synthesize_from_specs(
        request["specs"], request["batch"], request.get("shapes"), 0, request.get("vocab") or {}
    )
    for _ in range(RUNS):
        loaded.run(feeds)
    print(json.dumps({"peak_rss_bytes": _peak_rss_bytes()}))


if __name__ == "__main__":
    main(sys.argv[1])
