"""contracts/events: both record.ingested schemas are valid JSON Schema 2020-12, and the events
that ingest_api.intake.build_event produces validate against the schema of their version."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from jsonschema import Draft202012Validator

from exchange_core.events import PAYLOAD_FORMATS, topic_for, upcast_to_v2
from ingest_api.intake import IntakeRequest, build_event
from ingest_api.payload_validation import load_contract

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS = {1: "events/record.ingested.v1.schema.json", 2: "events/record.ingested.v2.schema.json"}


def validator(version: int) -> Draft202012Validator:
    return Draft202012Validator(load_contract(SCHEMAS[version]),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def produced_event(schema_version: int, content_type: str = "application/json") -> dict:
    req = IntakeRequest(
        partner_id="partner-7", idempotency_key="idem-1", method="POST",
        path=f"/v{schema_version}/ingest", schema_version=schema_version,
        record_id="155d3d80-f3f0-4b39-9207-0d122cf94a11", raw_body=b"{}" * 10,
        content_type=content_type, fingerprint=b"\x01" * 32, correlation_id="corr-xyz",
        received_at=datetime(2026, 6, 30, 23, 59, 59, 123456, tzinfo=timezone.utc),
    )
    return build_event(req, uuid.uuid4(), f"raw/2026/06/30/partner-7/{uuid.uuid4()}.json", "0" * 64)


@pytest.mark.parametrize("version", sorted(SCHEMAS))
def test_event_schemas_are_valid_2020_12_schemas(version):
    schema = load_contract(SCHEMAS[version])
    assert schema["$schema"] == DRAFT_2020_12
    Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(SCHEMAS[version])
    assert schema["additionalProperties"] is False


def test_v2_schema_is_v1_plus_payload_format():
    v1, v2 = load_contract(SCHEMAS[1]), load_contract(SCHEMAS[2])
    assert set(v2["properties"]) == set(v1["properties"]) | {"payload_format"}
    assert set(v2["required"]) == set(v1["required"]) | {"payload_format"}
    for name in set(v1["properties"]) - {"schema_version"}:
        assert v2["properties"][name] == v1["properties"][name], name
    assert set(v2["properties"]["payload_format"]["enum"]) == set(PAYLOAD_FORMATS.values())
    assert "PAYLOAD" in v2["description"]  # schema_version means the payload version: documented


def test_build_event_v1_validates_against_v1_only():
    event = produced_event(1)
    assert list(validator(1).iter_errors(event)) == []
    assert "payload_format" not in event
    assert not validator(2).is_valid(event)       # v2 consumers read it through the upcaster
    assert list(validator(2).iter_errors(upcast_to_v2(event))) == []
    assert topic_for(event) == "record.ingested.v1"


@pytest.mark.parametrize("content_type", ["application/fhir+json", "application/json"])
def test_build_event_v2_validates_against_v2(content_type):
    event = produced_event(2, content_type)
    assert list(validator(2).iter_errors(event)) == []
    assert event["schema_version"] == 2 and event["payload_format"] == PAYLOAD_FORMATS[2]
    assert not validator(1).is_valid(event)
    assert topic_for(event) == "record.ingested.v2"


def test_payload_schemas_are_valid_2020_12_schemas():
    for name in ("payloads/record.v1.schema.json", "payloads/fhir-bundle.v2.schema.json"):
        schema = load_contract(name)
        assert schema["$schema"] == DRAFT_2020_12
        Draft202012Validator.check_schema(schema)
