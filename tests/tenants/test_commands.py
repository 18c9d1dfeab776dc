"""`modelpress admin list-keys [--tenant]` and `revoke-key KEY_ID`: no secret is ever printed,
and a revoked key is refused at its next request (API-01)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import assert_problem

from app.cli import main
from app.core.auth import create_key
from app.core.config import get_settings
from app.db.session import session_scope
from app.main import create_app


@pytest.fixture
def auth_client(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MODELPRESS_AUTH_REQUIRED", "true")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client


@pytest.fixture
def keys(auth_client: Any, env: dict[str, str]) -> dict[str, str]:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        return {t: create_key(session, f"tenant-{t}", get_settings()) for t in ("a", "b")}


def _prefix(key: str) -> str:
    return "_".join(key.split("_")[:2])  # the secret may itself hold `_`


def _secret(key: str) -> str:
    return key[len(_prefix(key)) + 1 :]


def _lines(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["admin", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_list_keys_shows_prefix_tenant_and_dates_never_the_secret(
    keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _lines(capsys, "list-keys")

    assert code == 0
    assert lines[0].split() == ["PREFIX", "TENANT", "CREATED", "LAST_USED", "REVOKED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {_prefix(keys["a"]), _prefix(keys["b"])}
    assert rows[_prefix(keys["a"])][1] == "tenant-a"
    assert rows[_prefix(keys["a"])][4] == "-"
    assert not any(_secret(key) in "\n".join(lines) for key in keys.values())


def test_list_keys_of_one_tenant(keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    _code, lines = _lines(capsys, "list-keys", "--tenant", "tenant-b")

    assert [line.split()[0] for line in lines[1:]] == [_prefix(keys["b"])]


def test_a_revoked_key_is_401_at_once_and_the_other_still_works(
    auth_client: Any, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    def get(tenant: str) -> Any:
        return auth_client.get("/v1/models", headers={"Authorization": f"Bearer {keys[tenant]}"})

    assert get("a").status_code == 200

    code, lines = _lines(capsys, "revoke-key", _prefix(keys["a"]))

    assert code == 0
    assert "revoked" in lines[-1]
    assert_problem(get("a"), 401, "unauthorized")
    assert get("b").status_code == 200
    _code, listed = _lines(capsys, "list-keys", "--tenant", "tenant-a")
    assert listed[1].split()[4] != "-"


def test_revoke_accepts_the_bare_key_id_and_is_idempotent(
    keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key_id = keys["a"].split("_")[1]
    assert _lines(capsys, "revoke-key", key_id)[0] == 0

    code, lines = _lines(capsys, "revoke-key", _prefix(keys["a"]))

    assert code == 0
    assert "already revoked" in lines[-1]


def test_revoking_an_unknown_key_fails_with_a_message(
    keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["admin", "revoke-key", "mp_0000000000000000"])

    assert code != 0
    assert "No API key" in capsys.readouterr().err
