"""exchange_core.events.upcast_to_v2: v1 events become valid v2-shaped events; v2 events pass."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timezone

import pytest
from jsonschema import Draft202012Validator

from exchange_core.events import (
    PAYLOAD_FORMAT_FHIR_R4_BUNDLE,
    PAYLOAD_FORMAT_RECORD_V1,
    UnknownEventShape,
    payload_format_for,
    topic_for,
    upcast_to_v2,
)
from ingest_api.intake import IntakeRequest, build_event
from ingest_api.payload_validation import load_contract

V1 = Draft202012Validator(load_contract("events/record.ingested.v1.schema.json"),
                          format_checker=Draft202012Validator.FORMAT_CHECKER)
V2 = Draft202012Validator(load_contract("events/record.ingested.v2.schema.json"),
                          format_checker=Draft202012Validator.FORMAT_CHECKER)


def event(version: int, **overrides) -> dict:
    received_at = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
    req = IntakeRequest(
        partner_id="acme-health", idempotency_key="k-1", method="POST", path=f"/v{version}/ingest",
        schema_version=version, record_id=f"rec-{uuid.uuid4()}", raw_body=b'{"x": 1}',
        content_type="application/json", fingerprint=b"\0" * 32, correlation_id="corr-1",
        received_at=received_at,
    )
    built = build_event(req, uuid.uuid4(), f"raw/2026/03/01/acme-health/{uuid.uuid4()}.json", "a" * 64)
    built.update(overrides)
    return built


def test_v1_event_upcasts_to_a_valid_v2_event_keeping_the_payload_version():
    v1 = event(1)
    assert V1.is_valid(v1) and not V2.is_valid(v1)
    upcast = upcast_to_v2(v1)
    assert list(V2.iter_errors(upcast)) == []
    assert upcast["schema_version"] == 1
    assert upcast["payload_format"] == PAYLOAD_FORMAT_RECORD_V1
    assert {k: v for k, v in upcast.items() if k != "payload_format"} == v1


def test_upcast_does_not_modify_its_input():
    v1 = event(1)
    before = copy.deepcopy(v1)
    upcast = upcast_to_v2(v1)
    assert v1 == before and upcast is not v1


def test_native_v2_event_passes_through_as_an_equal_copy():
    v2 = event(2, content_type="application/fhir+json")
    assert list(V2.iter_errors(v2)) == []
    upcast = upcast_to_v2(v2)
    assert upcast == v2 and upcast is not v2
    assert upcast["payload_format"] == PAYLOAD_FORMAT_FHIR_R4_BUNDLE


@pytest.mark.parametrize("version", [1, 2])
def test_upcast_is_idempotent(version):
    once = upcast_to_v2(event(version))
    assert upcast_to_v2(once) == once


def test_v1_events_from_the_outbox_shape_upcast_for_many_records():
    # Several partners, ids and content types: every upcast v1 event is a valid v2 event.
    for partner in ("a", "partner-1", "dev", "x_y"):
        for record_id in ("r", "rec-" + "9" * 120, "ünïcode-id"):
            upcast = upcast_to_v2(event(1, partner_id=partner, record_id=record_id))
            assert V2.is_valid(upcast), list(V2.iter_errors(upcast))


@pytest.mark.parametrize("bad", [
    {"event_type": "record.deleted"},
    {"schema_version": 3},
    {"schema_version": "1"},
    {"schema_version": True},
    {"payload_format": PAYLOAD_FORMAT_FHIR_R4_BUNDLE},    # v1 payload claiming to be a bundle
])
def test_unknown_shapes_are_refused(bad):
    with pytest.raises(UnknownEventShape):
        upcast_to_v2(event(1, **bad))


def test_v2_event_without_payload_format_is_refused():
    v2 = event(2)
    del v2["payload_format"]
    with pytest.raises(UnknownEventShape):
        upcast_to_v2(v2)
    with pytest.raises(UnknownEventShape):
        upcast_to_v2(["not", "a", "dict"])  # type: ignore[arg-type]


@pytest.mark.parametrize("version, fmt", [(1, PAYLOAD_FORMAT_FHIR_R4_BUNDLE), (2, PAYLOAD_FORMAT_RECORD_V1)])
def test_v2_schema_ties_payload_format_to_schema_version(version, fmt):
    assert not V2.is_valid(event(version, payload_format=fmt))


def test_helpers():
    assert payload_format_for(1) == "record-v1" and payload_format_for(2) == "fhir-r4-bundle"
    with pytest.raises(UnknownEventShape):
        payload_format_for(9)
    assert topic_for(event(1)) == "record.ingested.v1"
    assert topic_for(upcast_to_v2(event(1))) == "record.ingested.v1"  # the payload version picks the topic
    assert topic_for(event(2)) == "record.ingested.v2"
