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


TIMEOUT_SECONDS = 600


def start(
    path: Path, fmt: str, specs: list[dict[str, Any]], feeds_request: dict[str, Any]
) -> subprocess.Popen[str]:
    """Start `python -m worker.measure.memprobe` on one model; `peak_of` collects its answer.

    Each probe is a process of its own, so probes of different models may run at the same time
    (and beside other work that does not time anything): a resident-set peak is per process."""
    request = {"path": str(path), "format": fmt, "specs": specs, **feeds_request}
    return subprocess.Popen(
        [sys.executable, "-m", "worker.measure.memprobe", json.dumps(request)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def peak_of(proc: subprocess.Popen[str]) -> int:
    """The peak RSS in bytes a started probe printed.

    Raises:
        subprocess.CalledProcessError: the probe failed (its stderr attached).
        subprocess.TimeoutExpired: it ran past TIMEOUT_SECONDS (it is killed).
    """
    try:
        out, err = proc.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
    return int(json.loads(out.strip().splitlines()[-1])["peak_rss_bytes"])


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
