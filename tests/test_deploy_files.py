"""docker compose cannot run here: check what can be checked of the deployment files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_the_production_services(compose: dict) -> None:
    services = set(compose["services"])

    assert {"postgres", "redis", "migrate", "api", "worker", "scheduler"} <= services


def test_compose_commands_are_modelpress_subcommands(compose: dict) -> None:
    commands = [s["command"] for s in compose["services"].values() if "command" in s]
    ours = [c for c in commands if c[0] == "modelpress"]

    assert {c[1] for c in ours} <= _subcommands()
    assert {c[1] for c in ours} == {"migrate", "api", "worker", "scheduler"}


def test_api_image_is_torch_free(compose: dict) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    api_stage = dockerfile.split("FROM base AS api")[1].split("FROM base AS worker")[0]

    assert "torch" not in api_stage
    assert compose["services"]["api"]["build"]["target"] == "api"
    assert compose["services"]["worker"]["build"]["target"] == "worker"


def test_dockerfile_commands_are_modelpress_subcommands() -> None:
    cmds = re.findall(r'^CMD \["modelpress", "(\w+)"', (ROOT / "Dockerfile").read_text(), re.M)

    assert set(cmds) == {"api", "worker"}  # worker: the CPU and the CUDA images
    assert set(cmds) <= _subcommands()


def test_compose_services_share_one_database_and_broker(compose: dict) -> None:
    envs = [s.get("environment") for s in compose["services"].values()]
    ours = [e for e in envs if e and "MODELPRESS_DATABASE_URL" in e]

    assert len({e["MODELPRESS_DATABASE_URL"] for e in ours}) == 1
    assert len({e["MODELPRESS_BROKER_URL"] for e in ours}) == 1
    assert all(e["MODELPRESS_AUTO_MIGRATE"] == "false" for e in ours)


def test_worker_containers_can_build_the_sandbox_jail() -> None:
    """The jail needs root and CAP_SYS_ADMIN in the worker container; compose refuses to run
    jobs unjailed rather than degrade (worker/sandbox/jail.py)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in ("worker", "worker-cuda"):
        service = compose["services"][name]
        assert "SYS_ADMIN" in service["cap_add"]
        assert "seccomp=unconfined" in service["security_opt"]
        assert service["environment"]["MODELPRESS_SANDBOX_ISOLATION"] == "required"
    for stage in ("FROM base AS worker\n", "FROM base AS worker-cuda\n"):
        body = dockerfile.split(stage)[1].split("\nFROM ")[0]
        assert "\nUSER " not in body
