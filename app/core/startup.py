"""What `modelpress run` and `modelpress api` refuse before they listen (RELIABILITY.md §4)."""

from __future__ import annotations

import ipaddress

from pydantic import ValidationError

from app.core.config import DEV_PEPPER, Settings, get_settings


class StartupRefused(Exception):
    """A configuration that would expose or break the service; the message says what to change."""


def load_settings() -> Settings:
    """The settings, or a refusal naming each bad variable (e.g. a MODELPRESS_STORAGE_URL that
    is neither a local path, a file:// URL nor s3://bucket/prefix) instead of a traceback.

    Raises:
        StartupRefused: one line per invalid setting.
    """
    try:
        return get_settings()
    except ValidationError as exc:
        reasons = "; ".join(_reason(err["loc"], str(err["msg"])) for err in exc.errors())
        raise StartupRefused(f"refusing to start: {reasons}") from None


def _reason(loc: tuple[int | str, ...], msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    name = "MODELPRESS_" + "_".join(str(part) for part in loc).upper()
    return msg if name in msg else f"{name}: {msg}"


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the port on this machine (a name other than `localhost`
    may resolve anywhere, so it counts as exposed)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> None:
    """Refuse to serve an exposed address without auth, or with auth but the built-in pepper.

    Raises:
        StartupRefused: with the settings that would make the start safe.
    """
    if is_loopback(host):
        return
    if not settings.auth_required:
        if settings.allow_insecure_bind:
            return
        raise StartupRefused(
            f"refusing to listen on {host}, a non-loopback address, with auth off: anyone who "
            "can reach the port could upload and run models. Set MODELPRESS_AUTH_REQUIRED=true "
            "(with a secret MODELPRESS_API_KEY_PEPPER), bind --host 127.0.0.1, or set "
            "MODELPRESS_ALLOW_INSECURE_BIND=true to accept the risk."
        )
    pepper = settings.api_key_pepper.get_secret_value()
    if pepper in ("", DEV_PEPPER):
        raise StartupRefused(
            f"refusing to listen on {host} with MODELPRESS_API_KEY_PEPPER unset (the built-in "
            "development pepper is public): set it to a secret, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`. Keys created "
            "under another pepper stop working; create them again."
        )
