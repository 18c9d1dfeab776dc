"""`modelpress jobs ...`: submit, list, get, cancel, wait, watch, logs [--follow]."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.client.api import Client, load_json_arg
from app.client.commands import _out
from app.client.errors import ApiError
from app.client.models import EXIT_BUDGET_MISSED, EXIT_FAILED, EXIT_MET, Job, Verdict
from app.client.render import Reporter

ANCHOR = 256  # at most this much of a moved window's first line is looked for in what was shown


def jobs(args: argparse.Namespace, client: Client, show: Reporter) -> int:
    """`jobs`: submit, list, get, cancel, wait (exit 1 unless the waited job succeeded), watch
    (exit 0 met, 1 failed, 2 budget missed), logs."""
    action = args.action
    if action == "submit":
        _out(client.submit(load_json_arg(args.spec), args.idempotency_key), args)
    elif action == "list":
        page = client.list_jobs(status=args.status, limit=args.limit, cursor=args.cursor)
        _out(page.model_dump(mode="json"), args)
    elif action == "get":
        _out(client.get_job(args.id), args)
    elif action == "cancel":
        _out(client.cancel(args.id), args)
    elif action == "wait":
        job = client.wait_job(args.id, on_event=show.event)
        show.close()
        _out(job, args)
        return EXIT_MET if job.status == "succeeded" else EXIT_FAILED
    elif action == "watch":
        return watch(args, client, show)
    elif action == "logs":
        return logs(args, client)
    return EXIT_MET


def watch(args: argparse.Namespace, client: Client, show: Reporter) -> int:
    """Follow a job's events (progress bar or lines) to its end; exit as `optimize` does."""
    verdict: Verdict | None = None
    for event in client.events(args.id):
        show.event(event)
        if event.event == "verdict":
            verdict = Verdict.model_validate(event.data)
    show.close()
    job = client.get_job(args.id)
    if job.status == "succeeded" and verdict is None:
        verdict = _report_verdict(client, job)
    code = exit_code(job, verdict)
    if job.status != "succeeded":
        error = job.error or {}
        detail = f"{error.get('code', '')}: {error.get('detail', '')}"
        print(f"job {job.status}: {detail}", file=sys.stderr)
    doc = {"job": job.to_json(), "verdict": verdict.to_json() if verdict else None}
    _out({**doc, "exit_code": code}, args)
    return code


def _report_verdict(client: Client, job: Job) -> Verdict | None:
    try:
        return client.get_report(job.id).verdict
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def exit_code(job: Job, verdict: Verdict | None) -> int:
    if job.status != "succeeded":
        return EXIT_FAILED
    return EXIT_BUDGET_MISSED if verdict is not None and verdict.met is False else EXIT_MET


def logs(args: argparse.Namespace, client: Client) -> int:
    """Print the job's log text; `--follow` reads it again every poll interval and prints what
    is new until the job ends. A server without the logs route: one line, exit 3."""
    text = client.logs(args.id)
    if not args.follow:
        _out({"job": args.id, "logs": text}, args) if args.json else _write(text)
        return EXIT_MET
    shown = text
    if not args.json:
        _write(text)
    while not client.get_job(args.id).terminal:
        client.sleep(client.poll_interval)
        text = client.logs(args.id)
        new = new_text(shown, text)
        shown += new
        if not args.json:
            _write(new)
    new = new_text(shown, client.logs(args.id))  # what the last step wrote before the end
    shown += new
    _out({"job": args.id, "logs": shown}, args) if args.json else _write(new)
    return EXIT_MET


def new_text(shown: str, text: str) -> str:
    """The part of `text` (the log's last 1 MB now) after what was `shown` already."""
    if text.startswith(shown):
        return text[len(shown) :]
    # The window moved: `text` starts inside `shown`; find where, from the start of `text`.
    head = text[:ANCHOR].partition("\n")
    head_text = head[0] + head[1]
    at = shown.find(head_text)
    while at >= 0:
        if text.startswith(shown[at:]):
            return text[len(shown) - at :]
        at = shown.find(head_text, at + 1)
    return text


def _write(text: Any) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
