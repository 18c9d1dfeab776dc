"""docker compose cannot run here: check what can be checked of the deployment files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser
from app.core.storage_url import parse_storage_url

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


def _modelpress_services(compose: dict) -> dict[str, dict]:
    return {
        name: s
        for name, s in compose["services"].items()
        if s.get("command", [""])[0] == "modelpress"
    }


def test_compose_stores_blobs_in_minio_through_s3(compose: dict) -> None:
    services = compose["services"]
    ours = _modelpress_services(compose)

    assert services["minio"]["image"].startswith("minio/minio")
    assert len({s["environment"]["MODELPRESS_STORAGE_URL"] for s in ours.values()}) == 1
    for name, service in ours.items():
        env = service["environment"]
        location = parse_storage_url(env["MODELPRESS_STORAGE_URL"])
        assert location.scheme == "s3", name
        assert env["MODELPRESS_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= set(env)
    bucket = parse_storage_url(ours["api"]["environment"]["MODELPRESS_STORAGE_URL"]).bucket
    init = services["minio-init"]
    assert f"mc mb --ignore-existing store/{bucket}" in " ".join(init["command"])
    minio_user = services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert ours["worker"]["environment"]["AWS_ACCESS_KEY_ID"] == minio_user


def test_compose_shares_no_volume_between_api_and_workers(compose: dict) -> None:
    ours = _modelpress_services(compose)

    named = {
        name: {v.split(":")[0] for v in s.get("volumes", []) if ":" in v}
        for name, s in ours.items()
    }
    assert all(not volumes for volumes in named.values()), named
    assert "artifacts" not in compose.get("volumes", {})
    for name in ("api", "worker", "worker-cuda", "scheduler"):
        assert ours[name]["environment"]["MODELPRESS_DATA_DIR"] == "/data"


def test_compose_scales_api_and_workers_after_the_bucket_exists(compose: dict) -> None:
    ours = _modelpress_services(compose)

    assert ours["api"]["deploy"]["replicas"] >= 2
    assert ours["worker"]["deploy"]["replicas"] >= 2
    for name in ("api", "worker", "worker-cuda", "scheduler"):
        after = ours[name]["depends_on"]
        assert after["minio-init"] == {"condition": "service_completed_successfully"}, name
        assert after["migrate"] == {"condition": "service_completed_successfully"}, name


# ---------------------------------------------------------------- the locks (`make lock`)

LOCKS = {"server": "requirements/server.txt", "worker": "requirements/worker.txt"}
LOCKS["dev"] = "requirements/dev.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """A lock as {normalized name: (version, its sha256 hashes)}; every requirement line pinned."""
    from packaging.utils import canonicalize_name

    pins: dict[str, tuple[str, list[str]]] = {}
    text = (ROOT / LOCKS[name]).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        assert match, f"{LOCKS[name]}: not an exact pin: {line!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        pins[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return pins


def _wanted(extra: str) -> list:
    """pyproject's requirements of an install with `extra`, self-references followed."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted, todo, done = [Requirement(r) for r in project["dependencies"]], [extra], set()
    while todo:
        name = todo.pop()
        done.add(name)
        for req in map(Requirement, extras[name]):
            if req.name == project["name"]:
                todo.extend(e for e in req.extras if e not in done)
            else:
                wanted.append(req)
    return [r for r in wanted if r.marker is None or r.marker.evaluate({"extra": extra})]


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_every_locked_package_is_pinned_with_hashes(name: str) -> None:
    pins = _lock(name)

    assert len(pins) > 20
    assert [p for p, (_, hashes) in pins.items() if not hashes] == []
    assert "modelpress" not in pins  # the project itself goes in with `--no-deps`


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_holds_every_dependency_of_pyproject_in_range(name: str) -> None:
    from packaging.utils import canonicalize_name

    pins = _lock(name)

    for req in _wanted(name):
        key = canonicalize_name(req.name)
        assert key in pins, f"{req} is not in {LOCKS[name]}: run `make lock`"
        version = pins[key][0]
        assert req.specifier.contains(version, prereleases=True), (req, version)


def test_locks_pin_the_cpu_build_of_torch_and_keep_it_off_the_server() -> None:
    locks = {name: _lock(name) for name in LOCKS}

    for name in ("dev", "worker"):
        version, hashes = locks[name]["torch"]
        assert version == "2.13.0+cpu" and len(hashes) == 1, (name, version, hashes)
    assert not {"torch", "onnx", "onnxruntime"} & set(locks["server"])
    assert not any(p.startswith("nvidia-") or p == "triton" for p in locks["dev"])


def test_locks_agree_on_every_version() -> None:
    locks = {name: _lock(name) for name in LOCKS}

    for name in ("server", "worker"):
        for package, (version, _) in locks[name].items():
            assert locks["dev"][package][0] == version, (name, package)


def test_installs_go_through_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()

    stamp = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "requirements/dev.txt" in stamp.splitlines()[0]  # a new lock reinstalls
    assert "--require-hashes -r requirements/dev.txt" in stamp
    assert "--no-deps" in stamp and "[dev]" not in stamp
    stages = {s.split()[0]: s for s in dockerfile.split("FROM base AS ")[1:]}
    assert "--require-hashes -r requirements/server.txt" in stages["api"]
    assert "--require-hashes -r requirements/worker.txt" in stages["worker"]
    assert "make test" in ci
