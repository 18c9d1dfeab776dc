"""Client subcommands of `modelpress` (optimize, models, datasets, jobs, artifacts): HTTP only."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from app.client.api import ApiError, Client, load_json_arg

EXIT_FAILED, EXIT_BUDGET_MISSED, EXIT_ERROR = 1, 2, 3
# What a client command reports as "modelpress: <error>" and exit 3 instead of a traceback.
CLIENT_ERRORS: tuple[type[Exception], ...] = (
    ApiError,
    httpx.ConnectError,
    httpx.HTTPStatusError,
    TimeoutError,
)


def _common() -> argparse.ArgumentParser:
    """`--url` and `--api-key`, accepted by every client subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--url", default=os.environ.get("MODELPRESS_URL", "http://127.0.0.1:8000"))
    parent.add_argument("--api-key", default=os.environ.get("MODELPRESS_API_KEY"))
    return parent


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.api_key)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _spec(args: argparse.Namespace, client: Client, model_id: str) -> dict[str, Any]:
    """The job spec of `optimize` (its datasets are uploaded on the way)."""
    spec: dict[str, Any] = {"model_id": model_id}
    if args.recipe:
        spec.update(recipe=args.recipe, objective=args.objective)
        if args.time_budget:
            spec["time_budget_s"] = args.time_budget
    else:
        spec["steps"] = load_json_arg(args.steps or '[{"op": "quantize"}]')
    if args.calibration_data:
        spec["calibration_dataset_id"] = client.upload("/v1/datasets", Path(args.calibration_data))[
            "id"
        ]
    if args.eval_data:
        dataset = client.upload("/v1/datasets", Path(args.eval_data))
        spec["evaluation"] = {"dataset_id": dataset["id"], "metric": args.metric}
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
    if constraints:
        spec["constraints"] = constraints
    if args.benchmark:
        spec["benchmark"] = load_json_arg(args.benchmark)
    return spec


def cmd_optimize(args: argparse.Namespace) -> int:
    """Upload, submit, follow, download model + report.json + report.html; exit 2 if the budget
    is missed, 1 if the job fails."""
    client = _client(args)
    model = client.upload("/v1/models", Path(args.model_file), input_shapes=args.input_shapes)
    model = client.wait_model(model["id"])
    if model["status"] != "ready":
        print(f"model rejected: {model['error']}", file=sys.stderr)
        return EXIT_FAILED
    job = client.submit(_spec(args, client, model["id"]))
    print(f"job {job['id']} queued", file=sys.stderr)
    if not args.wait:
        _print(job)
        return 0
    job = client.wait_job(job["id"], on_progress=_show_progress)
    if job["status"] != "succeeded":
        print(f"job {job['status']}: {job.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    out = Path(args.out)
    for art in job["artifacts"]:
        if art["kind"] in ("model", "report"):
            client.download(f"/v1/jobs/{job['id']}/artifacts/{art['name']}", out / art["name"])
    verdict = client.get(f"/v1/jobs/{job['id']}/report")["verdict"]
    print(json.dumps({"job": job["id"], "out": str(out), "verdict": verdict}, indent=2))
    return EXIT_BUDGET_MISSED if verdict.get("met") is False else 0


def _show_progress(job: dict[str, Any]) -> None:
    progress = job.get("progress") or {}
    print(
        f"  {job['status']} {progress.get('fraction', 0):.0%} {progress.get('message', '')}",
        file=sys.stderr,
    )


def _crud(args: argparse.Namespace) -> int:
    """`models` and `datasets`: list, get, delete, upload."""
    client, kind, action = _client(args), args.kind, args.action
    base = f"/v1/{kind}"
    if action == "list":
        _print(client.get(base, limit=args.limit))
    elif action == "get":
        _print(client.get(f"{base}/{args.id}"))
    elif action == "delete":
        client.delete(f"{base}/{args.id}")
    elif action == "upload":
        fields = {"input_shapes": getattr(args, "input_shapes", None), "name": args.name}
        _print(client.upload(base, Path(args.file), **fields))
    return 0


def _jobs(args: argparse.Namespace) -> int:
    """`jobs`: submit, list, get, cancel, wait (exit 1 unless the waited job succeeded)."""
    client = _client(args)
    if args.action == "submit":
        _print(client.submit(load_json_arg(args.spec), args.idempotency_key))
    elif args.action == "list":
        _print(
            client.get(
                "/v1/jobs", limit=args.limit, **({"status": args.status} if args.status else {})
            )
        )
    elif args.action == "get":
        _print(client.get(f"/v1/jobs/{args.id}"))
    elif args.action == "cancel":
        _print(client.cancel(args.id))
    elif args.action == "wait":
        job = client.wait_job(args.id, on_progress=_show_progress)
        _print(job)
        return 0 if job["status"] == "succeeded" else EXIT_FAILED
    return 0


def _artifacts(args: argparse.Namespace) -> int:
    """`artifacts`: list a job's artifacts or download one (or all) into `--out`."""
    client = _client(args)
    job = client.get(f"/v1/jobs/{args.job_id}")
    if args.action == "list":
        _print(job["artifacts"])
        return 0
    names = [args.name] if args.name else [a["name"] for a in job["artifacts"]]
    for name in names:
        print(client.download(f"/v1/jobs/{args.job_id}/artifacts/{name}", Path(args.out) / name))
    return 0


def add_client_commands(sub: Any) -> None:
    """Register optimize, models, datasets, jobs and artifacts."""
    common = _common()
    _add_optimize(sub, common)
    for kind in ("models", "datasets"):
        _add_crud(sub, common, kind)
    _add_jobs(sub, common)
    _add_artifacts(sub, common)


def _add_optimize(sub: Any, common: argparse.ArgumentParser) -> None:
    """`modelpress optimize MODEL_FILE ...`."""
    p = sub.add_parser("optimize", parents=[common], help=cmd_optimize.__doc__)
    p.add_argument("model_file")
    p.add_argument("--steps", help="JSON list of steps, inline or @file (default: quantize)")
    p.add_argument("--recipe", choices=["auto"])
    p.add_argument("--objective", choices=["latency", "size"], default="latency")
    p.add_argument("--time-budget", type=float, dest="time_budget")
    p.add_argument("--input-shapes", help="JSON, required for TorchScript uploads")
    p.add_argument("--calibration-data", help=".npz for static quantization / auto")
    p.add_argument("--eval-data", help="labelled .npz for accuracy")
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--max-accuracy-drop", type=float)
    p.add_argument("--min-speedup", type=float)
    p.add_argument("--min-cosine", type=float, help="every output's cosine_mean vs the original")
    p.add_argument(
        "--allow-slower", action="store_true", help="a slower result does not miss the budget"
    )
    p.add_argument("--benchmark", help="JSON benchmark settings, inline or @file")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--out", default="dist")
    p.set_defaults(func=cmd_optimize)


def _add_crud(sub: Any, common: argparse.ArgumentParser, kind: str) -> None:
    """`modelpress models|datasets list|get|delete|upload`."""
    p = sub.add_parser(kind, parents=[common], help=f"list, get, upload, delete {kind}")
    p.set_defaults(func=_crud, kind=kind)
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common]).add_argument("--limit", type=int, default=50)
    for action in ("get", "delete"):
        actions.add_parser(action, parents=[common]).add_argument("id")
    up = actions.add_parser("upload", parents=[common])
    up.add_argument("file")
    up.add_argument("--name")
    if kind == "models":
        up.add_argument("--input-shapes")


def _add_jobs(sub: Any, common: argparse.ArgumentParser) -> None:
    """`modelpress jobs submit|list|get|cancel|wait`."""
    p = sub.add_parser("jobs", parents=[common], help="submit, list, get, cancel, wait")
    p.set_defaults(func=_jobs)
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("submit", parents=[common])
    s.add_argument("spec", help="JSON job spec, inline or @file")
    s.add_argument("--idempotency-key")
    ls = actions.add_parser("list", parents=[common])
    ls.add_argument("--status")
    ls.add_argument("--limit", type=int, default=50)
    for action in ("get", "cancel", "wait"):
        actions.add_parser(action, parents=[common]).add_argument("id")


def _add_artifacts(sub: Any, common: argparse.ArgumentParser) -> None:
    """`modelpress artifacts list|download`."""
    p = sub.add_parser("artifacts", parents=[common], help="list or download a job's artifacts")
    p.set_defaults(func=_artifacts)
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common]).add_argument("job_id")
    dl = actions.add_parser("download", parents=[common])
    dl.add_argument("job_id")
    dl.add_argument("name", nargs="?")
    dl.add_argument("--out", default=".")
