"""De-identification: a raw record in, tokens plus the clinical part out, no PII.

Output shape (consumed by the Dagster pipeline; keep the names)::

    {"schema_version": 1, "source_format": "record.v1",          # 2, "fhir-r4-bundle" for v2
     "person": {"tokens": {"T1".."T5"}, "key_id", "birth_year", "postal_code3", "sex"},
     "encounters": [...], "conditions": [...], "observations": [...]}

From the patient only the five tokens, the birth YEAR, the first three characters of the
normalized postal code (US ZIP3 / Canadian FSA) and the normalized sex leave this module; the
output is built field by field from an allow-list, never by copying and deleting.

`deidentify()` dispatches on the document's shape: a FHIR R4 ``Bundle`` (v2) is checked with
`ingest_api.fhir_validation.check_bundle` (the rules `/v2/ingest` applies) and de-identified by
`tokenizer.fhir_deidentify.deidentify_fhir_bundle`; anything else is validated against
record.v1 and de-identified by `deidentify_v1`.
"""

from __future__ import annotations

from typing import Any, Protocol

from ingest_api.fhir_validation import check_bundle
from ingest_api.payload_validation import describe_errors, validator_for
from tokenizer.opentoken import (
    PersonAttributes,
    TokenHasher,
    normalize_birth_date,
    normalize_postal_code,
    normalize_sex,
    tokenize,
)

OUTPUT_SCHEMA_VERSION = 1
V1_SCHEMA = "payloads/record.v1.schema.json"
MAX_LISTED_PATHS = 10


class KeySource(Protocol):
    """A `KeyRing` or one `ActiveKey` snapshot of it."""

    @property
    def key_id(self) -> str: ...

    @property
    def hasher(self) -> TokenHasher: ...


class DeidentifyError(Exception):
    """A permanent, per-record failure. ``detail`` names rules and paths, never values."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(detail)
        self.reason_code = reason_code
        self.detail = detail


def deidentify(document: Any, key_ring: KeySource) -> dict[str, Any]:
    """Validate and de-identify one parsed raw document, whatever its format.

    Raises `DeidentifyError` with reason code ``invalid_payload``.
    """
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        check = check_bundle(document)
        if not check.ok:
            # check_bundle's messages and paths are value-free by construction.
            where = ", ".join(f"{v.path} ({v.rule})" for v in check.violations[:MAX_LISTED_PATHS])
            raise DeidentifyError("invalid_payload",
                                  f"the object is not an acceptable FHIR R4 bundle: "
                                  f"{check.detail()} [{where}]")
        # Imported here: tokenizer.fhir_deidentify imports this module's helpers.
        from tokenizer.fhir_deidentify import deidentify_fhir_bundle

        return deidentify_fhir_bundle(document, key_ring, record_id=check.record_id)
    errors = describe_errors(validator_for(V1_SCHEMA), document, limit=MAX_LISTED_PATHS)
    if errors:
        where = ", ".join(f"{e['path']} ({e['rule']})" for e in errors)
        raise DeidentifyError("invalid_payload",
                              f"the object does not match record.v1: {where}")
    return deidentify_v1(document, key_ring)


def deidentify_v1(document: dict[str, Any], key_ring: KeySource) -> dict[str, Any]:
    """De-identify a record.v1 document (already schema-valid). Pure: no I/O, no clock but today.

    Pass an `ActiveKey` snapshot when de-identifying a batch, so all records share one key id.
    """
    patient = document["patient"]
    encounter = document["encounter"]
    encounter_id = encounter["encounter_id"]
    person = PersonAttributes(
        first_name=patient.get("first_name"),
        last_name=patient.get("last_name"),
        birth_date=patient.get("birth_date"),
        sex=patient.get("sex"),
        postal_code=patient.get("postal_code"),
        ssn=patient.get("ssn"),
    )
    return {
        "schema_version": OUTPUT_SCHEMA_VERSION,
        "source_format": "record.v1",
        "person": {
            "tokens": tokenize(person, key_ring.hasher),
            "key_id": key_ring.key_id,
            "birth_year": birth_year(person.birth_date),
            "postal_code3": postal_code3(person.postal_code),
            "sex": sex_category(person.sex),
        },
        "encounters": [{
            "encounter_id": encounter_id,
            "class": encounter["class"],
            "start": encounter["start"],
            "end": encounter.get("end"),
        }],
        "conditions": [
            {
                "encounter_id": encounter_id,
                "system": diagnosis["system"],
                "code": diagnosis["code"],
                "display": diagnosis.get("display"),
                "onset": None,  # v1 has no onset; v2 (FHIR Condition.onset*) fills it
            }
            for diagnosis in encounter["diagnoses"]
        ],
        "observations": [_observation(encounter_id, obs) for obs in encounter["observations"]],
    }


def _observation(encounter_id: str, observation: dict[str, Any]) -> dict[str, Any]:
    value = observation["value"]
    # bool is an int subclass in Python: test it first so `true` is text, not 1.
    if isinstance(value, bool):
        value_num, value_text = None, "true" if value else "false"
    elif isinstance(value, (int, float)):
        value_num, value_text = value, None
    else:
        value_num, value_text = None, str(value)
    return {
        "encounter_id": encounter_id,
        "system": observation["system"],
        "code": observation["code"],
        "value_num": value_num,
        "value_text": value_text,
        "unit": observation.get("unit"),
        "effective": observation["effective"],
    }


def birth_year(raw: str | None) -> int | None:
    """Year of a valid birth date (OpenToken's validity rules), else None."""
    normalized = normalize_birth_date(raw)
    return int(normalized[:4]) if normalized else None


def postal_code3(raw: str | None) -> str | None:
    """US ZIP3 or Canadian FSA of a valid postal code, else None."""
    normalized = normalize_postal_code(raw)
    return normalized[:3] if normalized else None


def sex_category(raw: str | None) -> str | None:
    """``male`` / ``female`` under OpenToken's sex rule, else None."""
    normalized = normalize_sex(raw)
    return normalized.lower() if normalized else None
