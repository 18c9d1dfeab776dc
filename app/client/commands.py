"""What the client commands do (app/client/cli.py declares their arguments).

Each returns the exit code of PRODUCT.md: 0 met, 1 job failed (or model rejected), 2 budget
missed, 3 usage or server error; `run` turns every client error into one line on stderr (and
with `--json` an `{"error": ...}` document on stdout) and exit 3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from app.client.api import Client, load_json_arg
from app.client.errors import ApiError
from app.client.models import EXIT_ERROR, Job, OptimizeResult, Result
from app.client.render import Reporter, emit
from app.client.streams import ProgressCallback

EXIT_INTERRUPTED = 130  # Ctrl-C: the shell's convention (128 + SIGINT), not an outcome of the job
# What a client command reports as "modelpress: <error>" and exit 3 instead of a traceback.
CLIENT_ERRORS: tuple[type[Exception], ...] = (
    ApiError,
    httpx.HTTPError,
    httpx.InvalidURL,
    TimeoutError,
    OSError,
    ValidationError,
    ValueError,
)


def run(args: argparse.Namespace) -> int:
    """Run the command in `args.action_func`, with one line (and exit 3) per error."""
    reporter = Reporter(quiet=args.json)
    try:
        return int(args.action_func(args, _client(args), reporter))
    except CLIENT_ERRORS as exc:
        reporter.close()
        error = _one_line(exc)
        print(f"modelpress: {error}", file=sys.stderr)
        if args.json:
            problem = exc.problem if isinstance(exc, ApiError) else {"detail": error}
            emit({"error": problem, "exit_code": EXIT_ERROR}, True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        reporter.close()
        print("modelpress: interrupted (the job, if one was submitted, goes on)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        reporter.close()


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ValidationError):
        return f"unexpected answer from the server: {text[:300]}"
    if isinstance(exc, httpx.HTTPError) and not isinstance(exc, httpx.HTTPStatusError):
        return f"{type(exc).__name__}: {text}"
    return text


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.api_key)


def _out(data: Any, args: argparse.Namespace) -> None:
    if isinstance(data, Result):
        data = data.to_json()
    elif isinstance(data, list):
        data = [d.to_json() if isinstance(d, Result) else d for d in data]
    emit(data, args.json)


# ---------------------------------------------------------------- optimize


def optimize(args: argparse.Namespace, client: Client, show: Reporter) -> int:
    """Upload, submit, follow, download model + report.json + report.html; exit 2 if the budget
    is missed, 1 if the job fails."""
    steps = None if args.recipe else load_json_arg(args.steps or '[{"op": "quantize"}]')
    spec: dict[str, Any] = {}
    if args.recipe:
        spec["objective"] = args.objective
        if args.time_budget:
            spec["time_budget_s"] = args.time_budget
    if args.benchmark:
        spec["benchmark"] = load_json_arg(args.benchmark)
    constraints = {
        k: v
        for k, v in (
            ("max_accuracy_drop", args.max_accuracy_drop),
            ("min_speedup", args.min_speedup),
            ("min_cosine", args.min_cosine),
            ("fail_if_slower", False if args.allow_slower else None),
        )
        if v is not None
    }
    result = client.optimize(
        Path(args.model_file),
        steps=steps,
        recipe=args.recipe,
        constraints=constraints or None,
        wait=args.wait,
        out=Path(args.out) if args.wait else None,
        input_shapes=args.input_shapes,
        calibration_data=args.calibration_data,
        eval_data=args.eval_data,
        metric=args.metric,
        spec=spec,
        on_upload=show.upload,
        on_event=show.event,
        on_download=show.download,
    )
    show.close()
    return _optimized(result, args)


def _optimized(result: OptimizeResult, args: argparse.Namespace) -> int:
    """Say what `optimize` did: the problem on stderr, the summary on stdout."""
    code = result.exit_code
    job = result.job
    if job is None:
        print(f"model rejected: {result.model.error}", file=sys.stderr)
        if args.json:
            _out({"model": result.model.to_json(), "exit_code": code}, args)
        return code
    if not args.wait:
        _out(job, args)
        return code
    if job.status != "succeeded":
        print(f"job {job.status}: {_problem(job)}", file=sys.stderr)
        if args.json:
            _out({"job": job.id, "status": job.status, "error": job.error, "exit_code": code}, args)
        return code
    summary: dict[str, Any] = {
        "job": job.id,
        "out": str(args.out),
        "verdict": result.verdict.to_json() if result.verdict else None,
    }
    if args.json:
        summary.update(status=job.status, files=[str(f) for f in result.files], exit_code=code)
    _out(summary, args)
    return code


def _problem(job: Job) -> str:
    error = job.error or {}
    return f"{error.get('code', '')}: {error.get('detail', error)}" if error else "(no error)"


# ---------------------------------------------------------------- models, datasets, artifacts


def crud(args: argparse.Namespace, client: Client, show: Reporter) -> int:
    """`models` and `datasets`: list, get, delete, upload."""
    kind, action = args.kind, args.action
    singular = {"models": "model", "datasets": "dataset"}[kind]
    if action == "list":
        lister = client.list_models if kind == "models" else client.list_datasets
        page = lister(limit=args.limit, cursor=args.cursor)
        _out(page.model_dump(mode="json"), args)
    elif action == "get":
        _out(getattr(client, f"get_{singular}")(args.id), args)
    elif action == "delete":
        getattr(client, f"delete_{singular}")(args.id)
        if args.json:
            _out({"deleted": args.id}, args)
    elif action == "upload":
        file = Path(args.file)
        progress: ProgressCallback = lambda done, total: show.upload(file.name, done, total)  # noqa: E731
        if kind == "models":
            result: Result = client.upload_model(file, args.name, args.input_shapes, progress)
        else:
            result = client.upload_dataset(file, args.name, progress)
        show.close()
        _out(result, args)
    return 0


def _to(show: Reporter, name: str) -> ProgressCallback:
    return lambda done, total: show.download(name, done, total)


def artifacts(args: argparse.Namespace, client: Client, show: Reporter) -> int:
    """`artifacts`: list a job's artifacts or download one (or all) into `--out`."""
    found = client.list_artifacts(args.job_id)
    if args.action == "list":
        _out(found, args)
        return 0
    names = [args.name] if args.name else [a.name for a in found]
    paths = []
    for name in names:
        paths.append(
            client.download_artifact(args.job_id, name, Path(args.out) / name, _to(show, name))
        )
    show.close()
    if args.json:
        _out([str(p) for p in paths], args)
    else:
        for path in paths:
            print(path)
    return 0
