"""What `modelpress run` / `api` refuse before listening (app/core/startup.py)."""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr
from support import is_service_setting

from app.core.config import Settings
from app.core.startup import StartupRefused, check_bind, is_loopback


@pytest.fixture(autouse=True)
def _no_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() here reads only what each test passes."""
    for key in list(os.environ):
        if is_service_setting(key):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.com"])
def test_exposed_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_loopback_with_auth_off_starts() -> None:
    check_bind(Settings(), "127.0.0.1")


def test_exposed_with_auth_off_is_refused_with_the_way_out() -> None:
    with pytest.raises(StartupRefused) as refused:
        check_bind(Settings(), "0.0.0.0")

    assert "MODELPRESS_ALLOW_INSECURE_BIND=true" in str(refused.value)
    assert "MODELPRESS_AUTH_REQUIRED=true" in str(refused.value)


def test_exposed_with_auth_off_and_the_override_starts() -> None:
    check_bind(Settings(allow_insecure_bind=True), "0.0.0.0")


@pytest.mark.parametrize("pepper", [None, ""])
def test_exposed_with_auth_on_and_the_dev_pepper_is_refused(pepper: str | None) -> None:
    settings = Settings(auth_required=True)
    if pepper is not None:
        settings = Settings(auth_required=True, api_key_pepper=SecretStr(pepper))

    with pytest.raises(StartupRefused, match="MODELPRESS_API_KEY_PEPPER"):
        check_bind(settings, "0.0.0.0")


def test_the_override_does_not_excuse_the_dev_pepper() -> None:
    settings = Settings(auth_required=True, allow_insecure_bind=True)

    with pytest.raises(StartupRefused):
        check_bind(settings, "0.0.0.0")


def test_exposed_with_auth_on_and_a_secret_pepper_starts() -> None:
    check_bind(Settings(auth_required=True, api_key_pepper=SecretStr("s3cret-" * 6)), "0.0.0.0")


def test_loopback_with_auth_on_keeps_the_dev_pepper() -> None:
    check_bind(Settings(auth_required=True), "127.0.0.1")
