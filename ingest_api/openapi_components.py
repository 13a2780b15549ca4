"""Component schemas shared by the served OpenAPI document and contracts/openapi.yaml."""

from __future__ import annotations

from ingest_api.routes.ingest import fhir_bundle_v2_schema_for_openapi, record_v1_schema_for_openapi


def component_schemas() -> dict:
    problem = {
        "type": "object",
        "description": "RFC 9457 problem details; never contains payload values.",
        "required": ["type", "title", "status", "detail", "correlation_id"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "correlation_id": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path", "rule"],
                    "properties": {
                        "path": {"type": "string"},
                        "rule": {"type": "string"},
                        "message": {"type": "string",
                                    "description": "What the rule requires (fixed text, never a payload value)."},
                    },
                },
            },
        },
    }
    accepted = {
        "type": "object",
        "required": ["record_id", "ingest_id", "event_id", "object_key", "sha256",
                     "schema_version", "received_at", "correlation_id", "status"],
        "properties": {
            "record_id": {"type": "string"},
            "ingest_id": {"type": "string", "format": "uuid"},
            "event_id": {"type": "string", "format": "uuid"},
            "object_key": {"type": "string"},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "schema_version": {"type": "integer", "enum": [1, 2]},
            "received_at": {"type": "string", "format": "date-time"},
            "correlation_id": {"type": "string"},
            "status": {"type": "string", "enum": ["accepted"]},
        },
    }
    status = {
        "type": "object",
        "required": ["record_id", "ingest_id", "event_id", "object_key", "sha256",
                     "schema_version", "status", "history", "submissions"],
        "properties": {
            "record_id": {"type": "string"},
            "ingest_id": {"type": "string", "format": "uuid"},
            "event_id": {"type": "string", "format": "uuid"},
            "object_key": {"type": "string"},
            "sha256": {"type": "string"},
            "schema_version": {"type": "integer"},
            "status": {"type": "string",
                       "enum": ["accepted", "published", "tokenized", "canonical", "dead_lettered"]},
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status", "at"],
                    "properties": {"status": {"type": "string"},
                                   "at": {"type": "string", "format": "date-time"},
                                   "reason": {"type": "string"}},
                },
            },
            "submissions": {"type": "integer", "description": "How many times this record_id was submitted"},
        },
    }
    return {"Problem": problem, "IngestAccepted": accepted, "RecordStatus": status,
            "RecordV1": record_v1_schema_for_openapi(),
            "FhirBundleV2": fhir_bundle_v2_schema_for_openapi()}


def security_schemes() -> dict:
    return {
        "partnerKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "Partner API key from `exchange partners create`; `dev` when EXCHANGE_ENV=local.",
        }
    }
