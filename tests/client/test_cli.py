"""The client commands through `modelpress`'s own parser, against the real app: `--json`, one
line per error, the exit codes, `jobs watch`, `jobs logs`; progress as bars or plain lines."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import app.client.commands
from app.cli import main
from app.client import Client, JobEvent
from app.client.jobs import new_text
from app.client.render import Reporter


@pytest.fixture
def cli(
    api: Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run `modelpress ARGS` with its client on the real app: (exit code, stdout, stderr)."""
    monkeypatch.setattr(app.client.commands, "_client", lambda args: api)

    def _run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_json_prints_one_document_on_one_line(cli: Callable, job: dict[str, Any]) -> None:
    code, out, err = cli("jobs", "list", "--json")

    assert code == 0 and err == ""
    assert out.count("\n") == 1
    assert [j["id"] for j in json.loads(out)["items"]] == [job["id"]]


def test_without_json_the_document_is_indented_as_before(
    cli: Callable, job: dict[str, Any]
) -> None:
    code, out, _ = cli("jobs", "get", job["id"])

    assert code == 0
    assert json.loads(out)["id"] == job["id"] and out.startswith("{\n  ")


def test_a_server_error_is_one_line_and_exit_3(cli: Callable) -> None:
    code, out, err = cli("jobs", "get", "nope")

    assert code == 3 and out == ""
    assert err.count("\n") == 1 and err.startswith("modelpress: 404 not_found: ")


def test_with_json_an_error_is_also_a_document(cli: Callable) -> None:
    code, out, err = cli("models", "get", "nope", "--json")

    assert code == 3
    assert json.loads(out)["error"]["code"] == "not_found"
    assert json.loads(out)["exit_code"] == 3
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [["jobs", "list", "--limit", "many"], ["jobs"], ["models", "upload"], ["optimize"]],
)
def test_a_usage_error_is_one_line_and_exit_3(cli: Callable, args: list[str]) -> None:
    code, out, err = cli(*args)

    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "error:" in err


def test_a_missing_file_is_one_line_and_exit_3(cli: Callable, tmp_path: Path) -> None:
    code, _, err = cli("models", "upload", str(tmp_path / "none.onnx"))

    assert code == 3
    assert err.count("\n") == 1 and "none.onnx" in err


def test_logs_print_the_jobs_log_text(cli: Callable, api: Client, job: dict[str, Any]) -> None:
    api.cancel(job["id"])

    code, out, err = cli("jobs", "logs", job["id"])

    assert code == 0 and err == ""
    assert out.endswith(" worker INFO cancelled while queued\n") and out.count("\n") == 1


def test_logs_follow_of_a_finished_job_prints_it_and_exits(
    cli: Callable, api: Client, job: dict[str, Any]
) -> None:
    api.cancel(job["id"])

    code, out, _ = cli("jobs", "logs", job["id"], "--follow")

    assert code == 0 and out.endswith("cancelled while queued\n")


def test_watch_follows_a_job_to_failure_in_plain_lines(
    cli: Callable, api: Client, job: dict[str, Any], worker_script: Callable
) -> None:
    api.sleep = worker_script(
        job["id"],
        [
            {"status": "running", "progress": {"fraction": 0.5, "message": "step 1/1: quantize"}},
            {"status": "failed", "error": {"code": "pass_failed", "detail": "it broke"}},
        ],
    )

    code, out, err = cli("jobs", "watch", job["id"])

    assert code == 1
    assert json.loads(out)["job"]["status"] == "failed"
    lines = err.splitlines()
    assert lines[0].startswith("  queued 0% (")
    assert any(line.startswith("  running 50% step 1/1: quantize (") for line in lines)
    assert lines[-1] == "job failed: pass_failed: it broke"


def test_watch_exits_2_on_a_missed_budget_and_json_is_quiet(
    cli: Callable, api: Client, job: dict[str, Any], worker_script: Callable, finish_job: Callable
) -> None:
    api.sleep = lambda s: finish_job(job["id"], met=False)

    code, out, err = cli("jobs", "watch", job["id"], "--json")

    assert code == 2 and err == ""
    doc = json.loads(out)
    assert doc["exit_code"] == 2 and doc["verdict"]["met"] is False


def test_submit_and_cancel(cli: Callable, model_id: str) -> None:
    spec = json.dumps({"model_id": model_id, "steps": [{"op": "quantize"}]})

    code, out, _ = cli("jobs", "submit", spec, "--idempotency-key", "k1", "--json")
    again = json.loads(cli("jobs", "submit", spec, "--idempotency-key", "k1", "--json")[1])
    cancelled = cli("jobs", "cancel", json.loads(out)["id"], "--json")

    assert code == 0 and again["id"] == json.loads(out)["id"]
    assert cancelled[0] == 0 and json.loads(cancelled[1])["id"] == again["id"]


def test_artifacts_download_with_json_lists_the_paths(
    cli: Callable, job: dict[str, Any], finish_job: Callable, tmp_path: Path
) -> None:
    finish_job(job["id"])

    code, out, err = cli("artifacts", "download", job["id"], "--out", str(tmp_path), "--json")

    assert code == 0 and err == ""
    assert sorted(Path(p).name for p in json.loads(out)) == [
        "model.onnx",
        "report.html",
        "report.json",
    ]


# ---------------------------------------------------------------- what a person sees


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _show(reporter: Reporter) -> None:
    reporter.upload("m.onnx", 0, 2000)
    reporter.upload("m.onnx", 2000, 2000)
    reporter.event(JobEvent(event="status", data={"status": "running"}))
    reporter.event(JobEvent(event="progress", data={"fraction": 0.5, "message": "step 1/2: prune"}))
    reporter.event(JobEvent(event="log", data={"message": "pruned 50%"}))
    reporter.event(JobEvent(event="verdict", data={"met": False, "reasons": ["slower"]}))
    reporter.close()


def test_a_terminal_gets_progress_bars() -> None:
    screen = Terminal()

    _show(Reporter(stream=screen))

    text = screen.getvalue()
    assert "\x1b[" in text  # drawn in place, not line by line
    assert "upload m.onnx" in text and "2.0/2.0 kB" in text
    assert "running step 1/2: prune" in text and "50%" in text
    assert "log: pruned 50%" in text and "verdict: missed (slower)" in text


def test_a_pipe_gets_plain_lines() -> None:
    log = io.StringIO()

    _show(Reporter(stream=log))

    lines = log.getvalue().splitlines()
    assert lines[:2] == ["upload m.onnx (2.0 KB)", "upload m.onnx: done"]
    assert lines[2].startswith("  running 0% (") and lines[3].startswith(
        "  running 50% step 1/2: prune ("
    )
    assert lines[4:] == ["  log: pruned 50%", "  verdict: missed (slower)"]


def test_quiet_shows_nothing() -> None:
    log = Terminal()

    _show(Reporter(quiet=True, stream=log))

    assert log.getvalue() == ""


# ---------------------------------------------------------------- parsing, logs that exist


def test_flags_given_before_the_action_are_kept() -> None:
    from app.cli import build_parser

    args = build_parser().parse_args(["jobs", "--json", "--url", "http://x", "list"])
    after = build_parser().parse_args(["jobs", "list", "--api-key", "k", "--json"])

    assert (args.json, args.url) == (True, "http://x")
    assert (after.json, after.api_key) == (True, "k")


def test_logs_follow_prints_each_new_line_once_until_the_job_ends(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = iter(["a\n", "a\nb\n", "a\nb\nc\n", "a\nb\nc\nd\n"])
    statuses = iter(["running", "running", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            return httpx.Response(200, text=next(logs))
        return httpx.Response(200, json={"id": "j", "status": next(statuses)})

    api = Client("http://t", transport=httpx.MockTransport(handler), sleep=lambda s: None)
    monkeypatch.setattr(app.client.commands, "_client", lambda args: api)

    assert main(["jobs", "logs", "j", "--follow"]) == 0
    assert capsys.readouterr().out == "a\nb\nc\nd\n"


def test_new_text_finds_its_place_when_the_1_mb_window_moves() -> None:
    assert new_text("ab\ncd\n", "ab\ncd\nef\n") == "ef\n"
    assert new_text("ab\ncd\n", "cd\nef\n") == "ef\n"  # the start fell out of the window
    assert new_text("", "x\n") == "x\n"


def test_watch_follows_server_sent_events(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = (
        'event: status\nid: 1\ndata: {"status": "running"}\n\n'
        'event: step\nid: 2\ndata: {"index": 0, "name": "quantize"}\n\n'
        'event: progress\nid: 3\ndata: {"fraction": 0.5, "message": "step 1/1: quantize"}\n\n'
        'event: log\nid: 4\ndata: {"message": "quantized 3 nodes"}\n\n'
        'event: verdict\nid: 5\ndata: {"met": true, "reasons": [], "notes": []}\n\n'
        'event: status\nid: 6\ndata: {"status": "succeeded"}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=stream)
        return httpx.Response(200, json={"id": "j", "status": "succeeded"})

    api = Client("http://t", transport=httpx.MockTransport(handler), sleep=lambda s: None)
    monkeypatch.setattr(app.client.commands, "_client", lambda args: api)

    code = main(["jobs", "watch", "j"])

    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["verdict"]["met"] is True
    assert "  running 50% step 1/1: quantize (" in err
    assert "  log: quantized 3 nodes\n" in err and "  verdict: met\n" in err


# ---------------------------------------------------------------- optimize, in process


def test_optimize_json_is_one_summary_with_the_files_and_exit_code(
    cli: Callable, api: Client, fake_worker: Callable, mlp_onnx: Path, tmp_path: Path
) -> None:
    api.sleep = fake_worker(met=False)
    out = tmp_path / "dist"

    code, stdout, err = cli("optimize", str(mlp_onnx), "--wait", "--out", str(out), "--json")

    assert code == 2 and err == ""
    doc = json.loads(stdout)
    assert doc["exit_code"] == 2 and doc["status"] == "succeeded"
    assert doc["verdict"]["met"] is False
    assert sorted(Path(f).name for f in doc["files"]) == [
        "model.onnx",
        "report.html",
        "report.json",
    ]


def test_optimize_shows_upload_and_job_progress_in_plain_lines(
    cli: Callable, api: Client, fake_worker: Callable, mlp_onnx: Path, tmp_path: Path
) -> None:
    api.sleep = fake_worker(met=True)

    code, stdout, err = cli("optimize", str(mlp_onnx), "--wait", "--out", str(tmp_path))

    assert code == 0
    assert json.loads(stdout)["verdict"]["met"] is True
    lines = err.splitlines()
    assert lines[0].startswith("upload mlp.onnx (") and lines[1] == "upload mlp.onnx: done"
    assert any(line.startswith("job ") and line.endswith(" queued") for line in lines)
    assert any(line.startswith("  running 50% step 1/1: quantize (") for line in lines)
    assert "download model.onnx: done" in lines and "  verdict: met" in lines


def test_optimize_of_a_rejected_model_exits_1(
    cli: Callable, api: Client, fake_worker: Callable, mlp_onnx: Path
) -> None:
    api.sleep = fake_worker(reject=True)

    code, stdout, err = cli("optimize", str(mlp_onnx), "--wait", "--json")

    assert code == 1
    assert json.loads(stdout)["model"]["status"] == "rejected"
    assert err.startswith("model rejected: ") and err.count("\n") == 1
