"""Property-based checks of the whole API against its own `/openapi.json` (API-08), in process.

Schemathesis generates requests from the published schema, about 25 per operation, with a valid
API key (`MODELPRESS_AUTH_REQUIRED=true`), and checks every answer: never a server error, a status
the operation documents, and a body that matches the documented schema (problem+json included).
A stateful run then follows the links schemathesis infers (an upload's `id` into the reads and
deletes that take it, a job's `Location`).

The two multipart upload routes are fuzzed too, but their generated "files" are random bytes
that the torch-free format checks refuse at once (415/422), so they stay cheap.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.generation.stateful.state_machine import APIStateMachine

from app.core.auth import create_key
from app.core.config import get_settings
from app.db.session import session_scope
from app.main import create_app

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.response_schema_conformance,
    checks.content_type_conformance,
]
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure here is reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def api_key(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MODELPRESS_AUTH_REQUIRED", "true")
    monkeypatch.setenv("MODELPRESS_RATE_LIMIT_PER_MINUTE", "0")  # hundreds of calls a minute
    get_settings.cache_clear()
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        return create_key(session, "fuzz", get_settings())


@pytest.fixture
def api_schema(api_key: str) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app())


def _fuzz(operation: Any, headers: dict[str, str], calls: Counter[str]) -> BaseException | None:
    """Run one operation's cases (valid and invalid ones); the first failure, or None."""
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @given(case=cases)
    @EXAMPLES
    def run(case: Any) -> None:
        calls[operation.label] += 1
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        run()
    except BaseException as exc:  # schemathesis' FailureGroup (a BaseExceptionGroup), or a bug
        return exc
    return None


def test_every_operation_answers_as_documented(api_schema: Any, api_key: str) -> None:
    # Not `schema.parametrize()`: its lazy loader does not work with pytest 9 (`_nodeid`).
    headers = {"Authorization": f"Bearer {api_key}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    calls: Counter[str] = Counter()
    failures = {op.label: _fuzz(op, headers, calls) for op in operations}
    failed = {label: exc for label, exc in failures.items() if exc is not None}

    assert len(operations) >= 20
    assert not failed, f"{len(failed)} of {len(operations)} operations failed:\n" + "\n\n".join(
        f"{label}: {exc}" for label, exc in failed.items()
    )
    assert sum(calls.values()) >= 300  # about 25 per operation that takes parameters


def test_sequences_of_calls_answer_as_documented(api_schema: Any, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    steps: Counter[str] = Counter()

    class Machine(api_schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            steps[case.operation.label] += 1
            return {"headers": headers}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, headers=headers)

    assert issubclass(Machine, APIStateMachine)
    Machine.run(
        settings=settings(
            EXAMPLES,
            max_examples=10,
            stateful_step_count=6,
            suppress_health_check=list(HealthCheck),
        )
    )

    assert steps, "schemathesis found no link to follow"
