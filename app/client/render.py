"""What the client commands show: rich progress bars on a terminal, plain lines otherwise,
nothing but one JSON document with `--json`.

Progress goes to stderr, results to stdout, so `modelpress ... > out.json` stays parseable. rich
is imported here only when something is drawn on a terminal.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from app.client.models import TERMINAL, JobEvent


def _size(n: int | None) -> str:
    if n is None:
        return "? B"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class Reporter:
    """Upload/download bytes and a job's progress (current step by name, fraction, elapsed)."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = not quiet and self.stream.isatty()
        self.started = time.monotonic()
        self.job_started: float | None = None
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}
        self._said: dict[str, str] = {}

    # -------------------------------------------------------------- plain lines

    def line(self, text: str) -> None:
        """One line above the bars (or alone); nothing in quiet mode."""
        if self.quiet:
            return
        if self._bars is not None:
            self._bars.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def _elapsed(self) -> str:
        """Since the job's first event (the upload before it has its own line)."""
        return f"{time.monotonic() - (self.job_started or self.started):.0f} s"

    # -------------------------------------------------------------- transfers

    def transfer(self, verb: str, name: str, done: int, total: int | None) -> None:
        """`on_upload` / `on_download`: a bar with bytes and speed, or a line at start and end."""
        if self.quiet:
            return
        if self.tty:
            bars = self._progress()
            key = f"{verb}:{name}"
            if key not in self._tasks:
                self._tasks[key] = bars.add_task(f"{verb} {name}", total=total, kind="bytes")
            bars.update(self._tasks[key], completed=done, total=total)
        elif done == 0:
            self.line(f"{verb} {name} ({_size(total)})")
        elif total is not None and done >= total:
            self.line(f"{verb} {name}: done")

    def upload(self, name: str, done: int, total: int | None) -> None:
        self.transfer("upload", name, done, total)

    def download(self, name: str, done: int, total: int | None) -> None:
        self.transfer("download", name, done, total)

    # -------------------------------------------------------------- job events

    def event(self, event: JobEvent) -> None:
        """`on_event`: status, step and progress move the job's bar (or print a line on change);
        log lines and the verdict are printed."""
        if self.quiet:
            return
        data = event.data
        if event.event == "log":
            self.line(f"  log: {data.get('message', data.get('text', data))}")
        elif event.event == "verdict":
            met = {True: "met", False: "missed", None: "no budget"}[data.get("met")]
            reasons = "; ".join(data.get("reasons") or [])
            self.line(f"  verdict: {met}" + (f" ({reasons})" if reasons else ""))
        elif event.event in ("status", "progress", "step"):
            self._job(event)

    def _job(self, event: JobEvent) -> None:
        data = event.data
        self.job_started = self.job_started or time.monotonic()
        if event.event == "status":
            self._said["status"] = str(data.get("status", ""))
            said = f"job {data['id']} {data.get('status')}" if data.get("id") else None
            if said and said != self._said.get("job"):  # the submit's and the stream's first
                self._said["job"] = said
                self.line(said)
        elif event.event == "step":
            self._said["step"] = str(data.get("name", ""))
        else:
            self._said["fraction"] = f"{float(data.get('fraction') or 0):.0%}"
            self._said["message"] = str(data.get("message", ""))
        status, message = self._said.get("status", ""), self._said.get("message", "")
        message = "" if message in TERMINAL or message == status else message
        fraction = self._said.get("fraction", "0%")
        if self.tty:
            bars = self._progress()
            if "job" not in self._tasks:
                self._tasks["job"] = bars.add_task("job", total=1.0, kind="job")
            done = float(fraction.rstrip("%")) / 100
            bars.update(self._tasks["job"], completed=done, description=f"{status} {message}")
            return
        text = f"  {status} {fraction} {message}".rstrip()
        if text != self._said.get("line"):
            self._said["line"] = text
            self.line(f"{text} ({self._elapsed()})")

    def _progress(self) -> Any:
        if self._bars is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )

            class Amount(DownloadColumn):
                """Bytes and speed for a transfer; nothing for the job's bar."""

                def render(self, task: Any) -> Any:
                    if task.fields.get("kind") != "bytes":
                        return ""
                    return super().render(task)

            class Speed(TransferSpeedColumn):
                def render(self, task: Any) -> Any:
                    return super().render(task) if task.fields.get("kind") == "bytes" else ""

            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                Amount(),
                Speed(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
            )
            self._bars.start()
        return self._bars

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


def emit(data: Any, as_json: bool, stream: IO[str] | None = None) -> None:
    """The command's result on stdout: one JSON document (compact on one line with `--json`,
    indented otherwise, as the commands always printed it; coloured on a terminal)."""
    out = stream or sys.stdout
    if as_json:
        out.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    elif out.isatty():  # a person: the same document, indented and coloured
        from rich.console import Console

        Console(file=out).print_json(json.dumps(data, default=str))
    else:
        out.write(json.dumps(data, indent=2, default=str) + "\n")
    out.flush()
