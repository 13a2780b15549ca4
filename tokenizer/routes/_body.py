"""Read and validate a JSON request body AFTER authentication.

FastAPI reads declared body parameters before dependencies run, so an unauthenticated caller
could make the service buffer and parse a large body. The handlers therefore declare no body
parameter: the auth dependency runs first, then this reads under a limit and validates.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from ingest_api.problems import Problem
from ingest_api.routes.ingest import read_body_limited, require_json_content_type

ModelT = TypeVar("ModelT", bound=BaseModel)

PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


async def parse_body(request: Request, model: type[ModelT], limit: int) -> ModelT:
    """The body as `model`: 415 not JSON, 413 too large, 400 malformed, 422 invalid."""
    require_json_content_type(request, ("application/json",))
    raw = await read_body_limited(request, limit)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise Problem(400, "malformed-json", "Malformed JSON",
                          "the request body is not valid JSON") from None
        described = sorted(
            {(_path(err["loc"]), err["type"]) for err in errors}
        )[:50]
        raise Problem(
            422, "request-invalid", "Request does not match the schema",
            f"{len(errors)} violation(s); see errors",
            extra={"errors": [{"path": path, "rule": rule} for path, rule in described]},
        ) from None


def _path(loc: tuple) -> str:
    """JSONPath-like location from a pydantic loc: names and indices, never values."""
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def request_body_doc(schema_name: str) -> dict:
    """openapi_extra for a handler whose body is parsed by hand."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}}


def error_responses(*statuses: int) -> dict:
    descriptions = {
        400: "Malformed JSON",
        401: "Missing or wrong service credential",
        413: "Body over the size limit",
        415: "Content-Type is not application/json",
        422: "Request violates the schema: failing paths and rules, never values",
        503: "Object store unavailable: retry the whole request after Retry-After",
    }
    return {status: {"description": descriptions[status], **PROBLEM} for status in statuses}
