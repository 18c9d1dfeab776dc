"""The smallest documented report as a fixture (`support.report_document`), for the artifacts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import report_document


@pytest.fixture
def report() -> Callable[[str], dict[str, Any]]:
    """`support.report_document`, as a fixture."""
    return report_document
