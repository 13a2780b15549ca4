"""POST /v1/ingest and /v2/ingest: validate, fingerprint, then hand over to the intake transaction."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from exchange_core.canonical_json import InvalidJson, nul_character_paths, parse_json, request_fingerprint
from ingest_api.dependencies import AppServices, IdempotencyKeyDep, PartnerDep, ServicesDep
from ingest_api.fhir_validation import check_bundle
from ingest_api.intake import IntakeRequest, IntakeResult, intake
from ingest_api.payload_validation import describe_errors, load_contract, validator_for
from ingest_api.problems import Problem

router = APIRouter(tags=["ingest"])

V1_SCHEMA = "payloads/record.v1.schema.json"
V2_SCHEMA = "payloads/fhir-bundle.v2.schema.json"
V2_CONTENT_TYPES = ("application/fhir+json", "application/json")

ACCEPTED_EXAMPLE_RESPONSES = {
    202: {"description": "Accepted (or replayed: header Idempotent-Replayed: true)",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestAccepted"}}}},
    400: {"description": "Missing/invalid Idempotency-Key or malformed JSON",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
    401: {"description": "Missing or unknown bearer key",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
    409: {"description": "Idempotency-Key reused with another body, or its twin is still in flight",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
    413: {"description": "Body over the size limit",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
    415: {"description": "Content-Type is not JSON",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
    422: {"description": "Schema violations: failing paths and rules, never values",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
    503: {"description": "Storage or database unavailable; see Retry-After",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
}


async def read_body_limited(request: Request, limit: int) -> bytes:
    """The body, refusing (413) past `limit` bytes without buffering the excess."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", "Payload too large",
                   f"the request body exceeds the limit of {limit} bytes")


def require_json_content_type(request: Request, accepted: tuple[str, ...]) -> str:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in accepted:
        raise Problem(415, "unsupported-media-type", "Unsupported media type",
                      f"send the body as {' or '.join(accepted)}")
    return media_type


def parse_or_4xx(raw: bytes):
    """The request body as a document the platform can store: 400 if it is not JSON; 422, with
    the paths, if a string holds U+0000 (no Postgres text or jsonb column can hold it, so such a
    record would be accepted and then never finish the pipeline)."""
    try:
        document = parse_json(raw)
    except InvalidJson as exc:
        raise Problem(400, "malformed-json", "Malformed JSON", str(exc)) from None
    paths = nul_character_paths(document, raw)
    if paths:
        raise Problem(422, "schema-violation", "Payload contains NUL characters",
                      f"{len(paths)} string(s) contain U+0000, which cannot be stored; see errors",
                      extra={"errors": paths})
    return document


def replay_headers(result: IntakeResult) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if result.replayed else {}


async def run_intake(
    request: Request, services: AppServices, partner_id: str, key: str,
    *, schema_version: int, record_id: str, raw: bytes, document, content_type: str,
) -> JSONResponse:
    req = IntakeRequest(
        partner_id=partner_id,
        idempotency_key=key,
        method=request.method,
        path=request.url.path,
        schema_version=schema_version,
        record_id=record_id,
        raw_body=raw,
        content_type=content_type,
        fingerprint=request_fingerprint(request.method, request.url.path, document),
        correlation_id=request.scope["state"]["correlation_id"],
        received_at=services.clock(),
    )
    try:
        result = await intake(services.pool, services.store, req,
                              lock_timeout_ms=services.settings.idempotency_lock_timeout_ms)
    except Problem as problem:
        if problem.status == 409:
            services.metrics.conflicts.inc()
        raise
    if result.replayed:
        services.metrics.replays.inc()
    else:
        services.metrics.accepted.labels(str(schema_version)).inc()
    return JSONResponse(result.body, status_code=result.status, headers=replay_headers(result))


@router.post(
    "/v1/ingest",
    operation_id="ingestRecordV1",
    summary="Submit one v1 patient record",
    status_code=202,
    responses=ACCEPTED_EXAMPLE_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecordV1"}}},
        }
    },
)
async def ingest_v1(
    request: Request, partner_id: PartnerDep, key: IdempotencyKeyDep, services: ServicesDep
) -> JSONResponse:
    content_type = require_json_content_type(request, ("application/json",))
    raw = await read_body_limited(request, services.settings.v1_max_body_bytes)
    document = parse_or_4xx(raw)
    errors = describe_errors(validator_for(V1_SCHEMA), document)
    if errors:
        raise Problem(422, "schema-violation", "Payload does not match record.v1",
                      f"{len(errors)} schema violation(s); see errors", extra={"errors": errors})
    return await run_intake(
        request, services, partner_id, key, schema_version=1, record_id=document["record_id"],
        raw=raw, document=document, content_type=content_type,
    )


def record_v1_schema_for_openapi() -> dict:
    schema = load_contract(V1_SCHEMA)
    schema.pop("$schema", None)
    schema.pop("$id", None)
    return schema


V2_RESPONSES = {
    **ACCEPTED_EXAMPLE_RESPONSES,
    415: {"description": "Content-Type is not application/fhir+json or application/json",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
    422: {"description": "Not an acceptable bundle (see fhir-bundle.v2): failing paths and rules, "
                         "never values. A bundle without exactly one Patient (including reference-data "
                         "bundles such as hospitalInformation/practitionerInformation) fails rule "
                         "exactly-one-patient; an unresolved urn:uuid reference fails reference-resolves.",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
}


@router.post(
    "/v2/ingest",
    operation_id="ingestBundleV2",
    summary="Submit one patient's HL7 FHIR R4 Bundle",
    description=(
        "One FHIR R4 Bundle (collection, batch or transaction) holding exactly one Patient, up to "
        "16 MiB. Same authentication, Idempotency-Key, replay/409 semantics and raw-object storage "
        "as /v1/ingest; the record id is Bundle.identifier.value, else Bundle.id, else the "
        "Patient's id, else the Patient entry's fullUrl without `urn:uuid:`. Emits "
        "record.ingested.v2 with payload_format fhir-r4-bundle."
    ),
    status_code=202,
    responses=V2_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {media_type: {"schema": {"$ref": "#/components/schemas/FhirBundleV2"}}
                        for media_type in V2_CONTENT_TYPES},
        }
    },
)
async def ingest_v2(
    request: Request, partner_id: PartnerDep, key: IdempotencyKeyDep, services: ServicesDep
) -> JSONResponse:
    content_type = require_json_content_type(request, V2_CONTENT_TYPES)
    raw = await read_body_limited(request, services.settings.v2_max_body_bytes)
    document = parse_or_4xx(raw)
    # A 4 MB bundle takes milliseconds to walk; off the event loop so other requests keep flowing.
    check = await asyncio.to_thread(check_bundle, document)
    if not check.ok:
        raise Problem(422, "schema-violation", "Payload is not an acceptable FHIR R4 bundle (fhir-bundle.v2)",
                      check.detail(), extra={"errors": check.errors()})
    return await run_intake(
        request, services, partner_id, key, schema_version=2, record_id=check.record_id,
        raw=raw, document=document, content_type=content_type,
    )


def fhir_bundle_v2_schema_for_openapi() -> dict:
    schema = load_contract(V2_SCHEMA)
    schema.pop("$schema", None)
    schema.pop("$id", None)
    return schema
