"""How many API processes `modelpress run` and `modelpress api` start (MODELPRESS_API_WORKERS)."""

from __future__ import annotations

import pytest

from app.cli import _api_workers
from app.core.config import Settings


@pytest.mark.parametrize(
    ("command", "broker", "expected"),
    [("run", None, 1), ("run", "redis://r:6379/0", 1), ("api", None, 1), ("api", "redis://r", 2)],
)
def test_the_default_depends_on_the_command_and_the_broker(
    command: str, broker: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELPRESS_API_WORKERS", raising=False)
    settings = Settings(broker_url=broker)

    assert _api_workers(settings, command) == expected


def test_the_setting_wins_for_both_commands() -> None:
    settings = Settings(api_workers=3)

    assert (_api_workers(settings, "run"), _api_workers(settings, "api")) == (3, 3)


def test_the_setting_is_bounded() -> None:
    with pytest.raises(ValueError, match="api_workers"):
        Settings(api_workers=0)
