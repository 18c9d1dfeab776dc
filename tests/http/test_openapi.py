"""The published `/openapi.json` is complete enough to build on (issue #12, "OpenAPI").

`openapi_gaps` walks the whole generated document, so a route or field added later without its
documentation fails here: every operation has its own summary and a description, every parameter
and every schema property a description, every request body an example that its schema accepts,
and every error answer is a documented problem+json, with the statuses the route's shape implies
(401/429 on `/v1`, 404 with a path parameter, 413/422 with a body).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from jsonschema import Draft202012Validator
from pydantic import BaseModel
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from support import assert_problem

from app.main import create_app

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/ProblemDetail"
ROOT = "urn:modelpress-openapi"


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options"}:
                yield path, method, operation


def _validator(document: dict[str, Any], pointer: str) -> Draft202012Validator:
    """A validator of the schema at `pointer` in the document (its `$ref`s resolve in it)."""
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(ROOT, resource)
    return Draft202012Validator({"$ref": f"{ROOT}#{pointer}"}, registry=registry)


def _examples(media: dict[str, Any]) -> list[Any]:
    found = [media["example"]] if "example" in media else []
    return found + [e["value"] for e in media.get("examples", {}).values() if "value" in e]


def _example_gaps(
    document: dict[str, Any], where: str, media: dict[str, Any], ptr: str
) -> list[str]:
    gaps = []
    for example in _examples(media):
        for error in _validator(document, ptr + "/schema").iter_errors(example):
            gaps.append(f"{where}: example does not match its schema: {error.message}")
    return gaps


def _schema_gaps(schema: Any, where: str) -> Iterator[str]:
    """Every property of `schema`, at any depth, has a description."""
    if not isinstance(schema, dict):
        return
    for name, prop in schema.get("properties", {}).items():
        if not (isinstance(prop, dict) and prop.get("description")):
            yield f"{where}.{name}: property without a description"
        yield from _schema_gaps(prop, f"{where}.{name}")
    for key in ("items", "additionalProperties", "not"):
        yield from _schema_gaps(schema.get(key), f"{where}[{key}]")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for index, member in enumerate(schema.get(key, [])):
            yield from _schema_gaps(member, f"{where}[{key}:{index}]")


def _request_gaps(
    document: dict[str, Any], label: str, ptr: str, body: dict[str, Any]
) -> list[str]:
    gaps = []
    for media_type, media in body.get("content", {}).items():
        where = f"{label} request {media_type}"
        media_ptr = f"{ptr}/requestBody/content/{_escape(media_type)}"
        schema = media.get("schema", {})
        target = schema
        if "$ref" in schema:
            target = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        if not _examples(media) and not target.get("examples"):
            gaps.append(f"{where}: request body without an example")
        gaps += _example_gaps(document, where, media, media_ptr)
        gaps += list(_schema_gaps(schema, where))
    return gaps


def _response_gaps(document: dict[str, Any], label: str, ptr: str, op: dict[str, Any]) -> list[str]:
    gaps, responses = [], op.get("responses", {})
    for status, response in responses.items():
        content = response.get("content", {})
        if status[0] in "45":
            refs = {m: c.get("schema", {}).get("$ref") for m, c in content.items()}
            if refs != {PROBLEM_JSON: PROBLEM_REF}:
                gaps.append(f"{label} {status}: not documented as {PROBLEM_JSON} ProblemDetail")
        if not response.get("description"):
            gaps.append(f"{label} {status}: response without a description")
        for media_type, media in content.items():
            media_ptr = f"{ptr}/responses/{status}/content/{_escape(media_type)}"
            gaps += _example_gaps(document, f"{label} {status}", media, media_ptr)
            gaps += list(_schema_gaps(media.get("schema"), f"{label} {status} {media_type}"))
    return gaps


def _required_statuses(path: str, op: dict[str, Any]) -> set[str]:
    """The problems an operation's shape implies, whatever it does."""
    required = {"401", "429"} if path.startswith("/v1/") else set()
    places = {p.get("in") for p in op.get("parameters", [])}
    if "path" in places:
        required.add("404")
    if "query" in places or "requestBody" in op:
        required.add("422")
    if "requestBody" in op:
        required.add("413")
    return required


def openapi_gaps(document: dict[str, Any]) -> list[str]:
    """Everything the document leaves undocumented, one line each (empty: complete)."""
    gaps: list[str] = []
    seen_ids: set[str] = set()
    for path, method, op in _operations(document):
        label, ptr = f"{method.upper()} {path}", f"/paths/{_escape(path)}/{method}"
        op_id = op.get("operationId", "")
        if not op_id or op_id in seen_ids:
            gaps.append(f"{label}: missing or repeated operationId {op_id!r}")
        seen_ids.add(op_id)
        # FastAPI makes "Get Job" of `get_job` when a route gives no summary of its own.
        if not op.get("summary") or op["summary"] == op_id.replace("_", " ").title():
            gaps.append(f"{label}: no summary of its own")
        if not op.get("description"):
            gaps.append(f"{label}: no description")
        for param in op.get("parameters", []):
            if not param.get("description"):
                gaps.append(f"{label}: parameter {param['name']} without a description")
        if "requestBody" in op:
            gaps += _request_gaps(document, label, ptr, op["requestBody"])
        gaps += _response_gaps(document, label, ptr, op)
        statuses = set(op.get("responses", {}))
        if not any(s.startswith("4") for s in statuses):
            gaps.append(f"{label}: no 4xx problem documented")
        for status in sorted(_required_statuses(path, op) - statuses):
            gaps.append(f"{label}: does not document {status}")
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        gaps += list(_schema_gaps(schema, name))
    return gaps


# ---------------------------------------------------------------- the document


def test_the_whole_document_is_documented() -> None:
    document = create_app().openapi()

    gaps = openapi_gaps(document)

    assert len(list(_operations(document))) >= 20
    assert not gaps, f"{len(gaps)} gaps in /openapi.json:\n" + "\n".join(gaps)


class Thing(BaseModel):
    label: str


def test_the_check_finds_an_undocumented_route_and_field() -> None:
    app: FastAPI = create_app()

    @app.get("/v1/things/{thing_id}")
    def get_thing(thing_id: str) -> Thing:
        return Thing(label=thing_id)

    @app.post("/v1/things")
    def add_thing(thing: Thing) -> Thing:
        return thing

    gaps = "\n".join(openapi_gaps(app.openapi()))

    assert "GET /v1/things/{thing_id}: no summary of its own" in gaps
    assert "GET /v1/things/{thing_id}: no description" in gaps
    assert "GET /v1/things/{thing_id}: parameter thing_id without a description" in gaps
    assert "GET /v1/things/{thing_id}: does not document 404" in gaps
    assert "POST /v1/things request application/json: request body without an example" in gaps
    assert "POST /v1/things: does not document 413" not in gaps  # the body limit covers it
    assert "Thing.label: property without a description" in gaps


def test_an_example_its_schema_refuses_is_a_gap() -> None:
    document = create_app().openapi()
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    body["examples"]["broken"] = {"value": {"model_id": "m", "steps": [{"op": "no_such_op"}]}}

    gaps = openapi_gaps(document)

    assert any("POST /v1/jobs" in g and "does not match its schema" in g for g in gaps), gaps


def test_operation_ids_are_the_route_functions_names() -> None:
    document = create_app().openapi()

    ids = {op["operationId"] for _path, _method, op in _operations(document)}

    assert {"upload_model", "submit_job", "get_job", "get_report", "list_passes"} <= ids


def test_every_job_example_passes_request_validation(client: Any) -> None:
    document = client.get("/openapi.json").json()
    media = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]

    answers = {
        name: client.post("/v1/jobs", json=ex["value"]) for name, ex in media["examples"].items()
    }

    assert len(answers) >= 3
    for name, response in answers.items():
        # Past validation, the service looks for the example's model: no such model here.
        body = assert_problem(response, 422, "spec_invalid")
        assert body["pointer"] == "/model_id", (name, body)
