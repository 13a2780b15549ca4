"""record.ingested event shapes and the v1 → v2 upcaster.

Two shapes exist (contracts/events/record.ingested.v{1,2}.schema.json):
- v1 (topic `record.ingested.v1`): the identifiers-and-hashes event, no `payload_format`.
- v2 (topic `record.ingested.v2`): the v1 fields plus `payload_format`.

`schema_version` is the version of the PAYLOAD contract, not of the event shape: 1 means the raw
object is a payloads/record.v1 document (`payload_format` "record-v1"), 2 means it is a FHIR R4
bundle (payloads/fhir-bundle.v2, `payload_format` "fhir-r4-bundle"). A v2 consumer therefore
handles one shape for both topics: `upcast_to_v2` adds `payload_format: "record-v1"` to a v1
event and keeps `schema_version: 1`, so a consumer still knows which parser the raw object needs.
Upcasting is pure (the input is not modified) and idempotent (an event already in v2 shape is
returned as an equal copy). No event carries PII, so errors may name fields but there is nothing
secret to hide either.
"""

from __future__ import annotations

from typing import Any

EVENT_TYPE = "record.ingested"
PAYLOAD_FORMAT_RECORD_V1 = "record-v1"
PAYLOAD_FORMAT_FHIR_R4_BUNDLE = "fhir-r4-bundle"
PAYLOAD_FORMATS: dict[int, str] = {1: PAYLOAD_FORMAT_RECORD_V1, 2: PAYLOAD_FORMAT_FHIR_R4_BUNDLE}


class UnknownEventShape(ValueError):
    """The event is not a record.ingested event this code knows how to read."""


def payload_format_for(schema_version: int) -> str:
    """The payload_format that goes with a payload schema_version."""
    try:
        return PAYLOAD_FORMATS[schema_version]
    except KeyError:
        raise UnknownEventShape(f"no payload format for schema_version {schema_version!r}") from None


def topic_for(event: dict[str, Any]) -> str:
    """The bus topic an event is published on: `record.ingested.v{schema_version}`."""
    return f"{EVENT_TYPE}.v{event['schema_version']}"


def upcast_to_v2(event: dict[str, Any]) -> dict[str, Any]:
    """A record.ingested event of either shape → a new dict in the v2 shape.

    v1 events gain `payload_format: "record-v1"` and keep `schema_version: 1` (the payload
    version). v2-shaped events are returned as a copy after checking that `payload_format` and
    `schema_version` agree. Anything else raises UnknownEventShape.
    """
    if not isinstance(event, dict) or event.get("event_type") != EVENT_TYPE:
        raise UnknownEventShape(f"not a {EVENT_TYPE} event")
    version = event.get("schema_version")
    if type(version) is not int or version not in PAYLOAD_FORMATS:
        raise UnknownEventShape(f"unsupported schema_version {version!r}")
    if "payload_format" in event:
        if event["payload_format"] != PAYLOAD_FORMATS[version]:
            raise UnknownEventShape(
                f"payload_format does not match schema_version {version} "
                f"(expected {PAYLOAD_FORMATS[version]!r})"
            )
        return dict(event)
    if version != 1:
        raise UnknownEventShape(f"a schema_version {version} event must carry payload_format")
    return {**event, "payload_format": PAYLOAD_FORMAT_RECORD_V1}
