"""Client subcommands of `modelpress` (optimize, models, datasets, jobs, artifacts): HTTP only.

argparse, like the server commands they are mounted beside (app/cli.py builds one parser for
both), with rich for the progress bars: a second CLI framework would mean rewriting app/cli.py
for no user-visible gain. Every client subcommand takes `--url`, `--api-key` and `--json`; a
usage error prints one line and exits 3 (argparse's own 2 means "budget missed" here).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from app.client.commands import CLIENT_ERRORS, artifacts, crud, optimize, run
from app.client.jobs import jobs
from app.client.models import EXIT_BUDGET_MISSED, EXIT_ERROR, EXIT_FAILED

__all__ = [
    "CLIENT_ERRORS",
    "EXIT_BUDGET_MISSED",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "add_client_commands",
]


class ClientParser(argparse.ArgumentParser):
    """A client subcommand's parser: a usage error is one line and exit 3."""

    def error(self, message: str) -> NoReturn:
        usage_error(self, message)


def usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    print(f"{parser.prog}: error: {message} (see {parser.prog} --help)", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def _common(nested: bool = False) -> argparse.ArgumentParser:
    """`--url`, `--api-key` and `--json`, accepted by every client subcommand. On a nested
    parser (`jobs list`) they have no default, so that `modelpress jobs --json list` keeps the
    value the command's own parser read (argparse lets a subparser's default overwrite it)."""
    parent = argparse.ArgumentParser(add_help=False)
    url = os.environ.get("MODELPRESS_URL", "http://127.0.0.1:8000")
    key = os.environ.get("MODELPRESS_API_KEY")
    unset = argparse.SUPPRESS
    parent.add_argument("--url", default=unset if nested else url)
    parent.add_argument("--api-key", default=unset if nested else key)
    parent.add_argument(
        "--json",
        action="store_true",
        default=unset if nested else False,
        help="print one JSON document on stdout and no progress (errors: one line on stderr)",
    )
    return parent


def _command(sub: Any, name: str, common: argparse.ArgumentParser, **kwargs: Any) -> Any:
    """A top-level client command whose usage errors exit 3 too."""
    p = sub.add_parser(name, parents=[common], **kwargs)
    p.error = lambda message: usage_error(p, message)
    return p


def _actions(p: argparse.ArgumentParser) -> Any:
    return p.add_subparsers(dest="action", required=True, parser_class=ClientParser)


def add_client_commands(sub: Any) -> None:
    """Register optimize, models, datasets, jobs and artifacts."""
    _add_optimize(sub, _common())
    for kind in ("models", "datasets"):
        _add_crud(sub, _common(), _common(nested=True), kind)
    _add_jobs(sub, _common(), _common(nested=True))
    _add_artifacts(sub, _common(), _common(nested=True))


def _add_optimize(sub: Any, common: argparse.ArgumentParser) -> None:
    """`modelpress optimize MODEL_FILE ...`."""
    p = _command(sub, "optimize", common, help=optimize.__doc__)
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
    p.set_defaults(func=run, action_func=optimize)


def _add_crud(
    sub: Any, common: argparse.ArgumentParser, nested: argparse.ArgumentParser, kind: str
) -> None:
    """`modelpress models|datasets list|get|delete|upload`."""
    p = _command(sub, kind, common, help=f"list, get, upload, delete {kind}")
    p.set_defaults(func=run, action_func=crud, kind=kind)
    actions = _actions(p)
    ls = actions.add_parser("list", parents=[nested])
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--cursor", help="the `next_cursor` of the previous page")
    for action in ("get", "delete"):
        actions.add_parser(action, parents=[nested]).add_argument("id")
    up = actions.add_parser("upload", parents=[nested])
    up.add_argument("file")
    up.add_argument("--name")
    if kind == "models":
        up.add_argument("--input-shapes")
    else:
        up.set_defaults(input_shapes=None)


def _add_jobs(sub: Any, common: argparse.ArgumentParser, nested: argparse.ArgumentParser) -> None:
    """`modelpress jobs submit|list|get|cancel|wait|watch|logs`."""
    p = _command(sub, "jobs", common, help="submit, list, get, cancel, wait, watch, logs")
    p.set_defaults(func=run, action_func=jobs)
    actions = _actions(p)
    s = actions.add_parser("submit", parents=[nested])
    s.add_argument("spec", help="JSON job spec, inline or @file")
    s.add_argument(
        "--idempotency-key", help="default: a fresh key, so that a retried submit is one job"
    )
    ls = actions.add_parser("list", parents=[nested])
    ls.add_argument("--status")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--cursor", help="the `next_cursor` of the previous page")
    for action in ("get", "cancel", "wait"):
        actions.add_parser(action, parents=[nested]).add_argument("id")
    w = actions.add_parser(
        "watch", parents=[nested], help="follow a job to its end: exit 0 met, 1 failed, 2 missed"
    )
    w.add_argument("id")
    lg = actions.add_parser("logs", parents=[nested], help="a job's log text")
    lg.add_argument("id")
    lg.add_argument("--follow", "-f", action="store_true", help="until the job ends")


def _add_artifacts(
    sub: Any, common: argparse.ArgumentParser, nested: argparse.ArgumentParser
) -> None:
    """`modelpress artifacts list|download`."""
    p = _command(sub, "artifacts", common, help="list or download a job's artifacts")
    p.set_defaults(func=run, action_func=artifacts)
    actions = _actions(p)
    actions.add_parser("list", parents=[nested]).add_argument("job_id")
    dl = actions.add_parser("download", parents=[nested])
    dl.add_argument("job_id")
    dl.add_argument("name", nargs="?")
    dl.add_argument("--out", default=".")
