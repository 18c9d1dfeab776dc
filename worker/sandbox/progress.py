"""Progress events from the sandbox to its supervisor: JSON lines appended to a file."""

from __future__ import annotations

import json
import time
from pathlib import Path


class Progress:
    def __init__(self, scratch: Path) -> None:
        self.path = scratch / "progress.jsonl"

    def emit(self, fraction: float, message: str, step: int | None = None) -> None:
        event = {"fraction": round(min(max(fraction, 0.0), 1.0), 4), "message": message}
        if step is not None:
            event["step"] = step
        event["ts"] = time.time()
        with self.path.open("a") as fh:
            fh.write(json.dumps(event) + "\n")
