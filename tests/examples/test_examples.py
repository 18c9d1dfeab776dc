"""examples/ run for real against `make run`'s service: the curl walkthrough, the Python
pipeline and the CI workflow's shell steps, each within its budget (exit 0) and missing it
(exit 2), with the files they download checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import is_service_setting

from app.client import parse_sse

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# Only what the examples need to say little: one batch size, few timed calls, no peak-memory
# probe, no noise copy. No budget given here depends on a timing.
FAST_BENCHMARK = (
    '{"batch_sizes": [1], "iterations": 5, "warmup": 1, "memory": false, "noise_control": false}'
)
TIMEOUT_S = 300


def client_env(url: str, **extra: str) -> dict[str, str]:
    """A clean environment for an example: this venv's commands first on PATH (`modelpress`,
    `python`), no server settings of the caller's, the service's URL."""
    env = {k: v for k, v in os.environ.items() if not is_service_setting(k)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["MODELPRESS_URL"] = url
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def assert_downloaded(out: Path, model: str = "model.onnx") -> dict[str, Any]:
    """The model and both reports are there, and the report describes that very file."""
    assert {model, "report.json", "report.html"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "report.json").read_text())
    assert report["optimized"]["size_bytes"] == (out / model).stat().st_size
    assert "<html" in (out / "report.html").read_text().lower()
    return report


# ---------------------------------------------------------------- examples/walkthrough.sh


def test_walkthrough_streams_the_job_from_queued_to_succeeded_and_downloads_it(
    service: str, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # A tiny model's timings are noise: the budget is fidelity alone, the guard off.
    budget = '{"min_cosine": 0.99, "fail_if_slower": false}'
    env = client_env(service, OUT=str(out), BENCHMARK=FAST_BENCHMARK, CONSTRAINTS=budget)

    done = run(["bash", str(EXAMPLES / "walkthrough.sh"), str(tiny_model)], env, tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    report = assert_downloaded(out)
    assert report["verdict"]["met"] is True
    # The `curl -N .../events` part of the output is the raw event stream.
    stream = done.stdout.split("/events\n", 1)[1].split("\n== 5.", 1)[0]
    events = list(parse_sse(stream.splitlines()))
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded", stream
    assert "running" in statuses
    assert [e for e in events if e.event == "verdict"][-1].data["met"] is True
    ids = [int(e.id) for e in events if e.id is not None]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert "verdict   MET" in done.stdout
    log = (out / "job.log").read_text()  # GET /v1/jobs/{id}/logs, printed too
    assert "quantize finished" in log and log in done.stdout


def test_walkthrough_exits_2_when_the_budget_is_missed(
    service: str, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    budget = '{"max_size_bytes": 1, "fail_if_slower": false}'
    env = client_env(service, OUT=str(out), BENCHMARK=FAST_BENCHMARK, CONSTRAINTS=budget)

    done = run(["bash", str(EXAMPLES / "walkthrough.sh"), str(tiny_model)], env, tmp_path)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "verdict   MISSED" in done.stdout
    assert "missed: size" in done.stdout
    assert assert_downloaded(out)["verdict"]["met"] is False  # still there to look at


def test_walkthrough_refusal_exits_3_with_the_problem(service: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all")

    done = run(["bash", str(EXAMPLES / "walkthrough.sh"), str(junk)], client_env(service), tmp_path)

    assert done.returncode == 3, done.stdout + done.stderr
    assert "HTTP 415" in done.stderr and "unsupported_model_format" in done.stderr


# ---------------------------------------------------------------- examples/pipeline.py


@pytest.mark.parametrize(
    ("budget", "code", "said"),
    [
        (["--min-cosine", "0.99", "--allow-slower"], 0, "budget   MET"),
        (["--max-size-bytes", "1", "--allow-slower"], 2, "budget   MISSED"),
    ],
    ids=["met", "missed"],
)
def test_pipeline_exits_with_the_cli_codes(
    service: str, tiny_model: Path, tmp_path: Path, budget: list[str], code: int, said: str
) -> None:
    out = tmp_path / "dist"
    argv = [sys.executable, str(EXAMPLES / "pipeline.py"), str(tiny_model), "--out", str(out)]

    done = run([*argv, *budget, "--benchmark", FAST_BENCHMARK], client_env(service), tmp_path)

    assert done.returncode == code, done.stdout + done.stderr
    assert said in done.stdout
    assert "status   succeeded" in done.stdout  # the events it printed, to the terminal one
    report = assert_downloaded(out)
    assert f"{report['optimized']['size_bytes']:,} B" in done.stdout


# ---------------------------------------------------------------- examples/ci/modelpress.yml

WORKFLOW = EXAMPLES / "ci" / "modelpress.yml"
# GitHub's own command for `shell: bash` (https://docs.github.com/en/actions/reference/
# workflow-syntax-for-github-actions#jobsjob_idstepsshell).
GITHUB_BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
NEEDS_PYPI = {"install"}  # the one `run:` step that needs the internet (pip install modelpress)


def run_workflow(
    service: str, workspace: Path, overrides: dict[str, str]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the workflow's `run:` steps in order as the runner would (its env, `shell: bash`,
    `if:` conditions, GITHUB_STEP_SUMMARY), but `install`, with `overrides` on the env."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    (job,) = doc["jobs"].values()
    summary = workspace / "step-summary.md"
    env = client_env(service, GITHUB_ACTIONS="true", CI="true", RUNNER_TEMP=str(workspace))
    env.update(GITHUB_STEP_SUMMARY=str(summary), GITHUB_WORKSPACE=str(workspace))
    env.update({**doc.get("env", {}), **job.get("env", {}), **overrides})
    unresolved = {k: v for k, v in env.items() if "${{" in str(v)}
    assert not unresolved, f"the test must give these (they are GitHub expressions): {unresolved}"
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    failed = False
    for index, step in enumerate(job["steps"]):
        if "run" not in step or step.get("id") in NEEDS_PYPI:
            continue
        condition = step.get("if", "success()")
        assert condition in ("success()", "always()", "failure()"), condition
        if (condition == "success()" and failed) or (condition == "failure()" and not failed):
            continue
        shell = step.get("shell", doc.get("defaults", {}).get("run", {}).get("shell"))
        assert shell == "bash", f"step {index} runs in {shell!r}"
        assert "${{" not in step["run"], "expressions in scripts: pass them through env"
        script = workspace / f"step-{index}.sh"
        script.write_text(step["run"])
        step_env = {**env, **{k: str(v) for k, v in step.get("env", {}).items()}}
        results[step.get("id", str(index))] = done = run(
            [*GITHUB_BASH, str(script)], step_env, workspace
        )
        failed = failed or done.returncode != 0
    return results


@pytest.mark.parametrize(
    ("budget", "code", "headline"),
    [
        ({"MIN_COSINE": "0.9", "MIN_SPEEDUP": "0.001"}, 0, "## ModelPress: budget met"),
        ({"MIN_COSINE": "0.9", "MIN_SPEEDUP": "100"}, 2, "## ModelPress: budget MISSED"),
    ],
    ids=["met", "missed"],
)
def test_ci_workflow_fails_the_build_exactly_when_the_budget_is_missed(
    service: str,
    tiny_model: Path,
    tmp_path: Path,
    budget: dict[str, str],
    code: int,
    headline: str,
) -> None:
    overrides = {
        **budget,
        "MODELPRESS_URL": service,
        "MODELPRESS_API_KEY": "",  # `make run` has auth off
        "MODEL_FILE": str(tiny_model),
        "ALLOW_SLOWER": "true",  # a tiny model's timings are noise: the test judges the budget
        "BENCHMARK": FAST_BENCHMARK,
    }

    steps = run_workflow(service, tmp_path, overrides)

    assert steps["check"].returncode == 0, steps["check"].stderr
    optimize = steps["optimize"]
    assert optimize.returncode == code, optimize.stdout + optimize.stderr
    assert json.loads(optimize.stdout)["verdict"]["met"] is (code == 0)
    summary = steps["summary"]  # `if: always()`: it runs after a missed budget too
    assert summary.returncode == 0, summary.stderr
    assert headline in (tmp_path / "step-summary.md").read_text()
    assert_downloaded(tmp_path / "dist")  # what the upload-artifact step ships


def test_ci_workflow_uploads_dist_even_when_the_build_fails() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    (job,) = doc["jobs"].values()
    upload = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "dist/"
    install = next(s for s in job["steps"] if s.get("id") == "install")
    assert "pip install modelpress" in install["run"]
    optimize = next(s for s in job["steps"] if s.get("id") == "optimize")
    assert "--wait --out dist/" in optimize["run"]
