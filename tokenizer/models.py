"""Request and response models of the tokenizer API (also the source of its OpenAPI schemas).

Requests are validated with these models after authentication (see `tokenizer.routes`);
responses are serialized directly with orjson for speed, and the unit tests check that what
`deidentify_v1` produces validates against `DeidentifiedRecord` (and what
`deidentify_fhir_bundle` produces against `DeidentifiedFhirBundle`), so the contract cannot drift.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PERSONS = 10_000
MAX_REFERENCES = 1_000
# Longer than any real attribute; bounds the regex work an abusive request can cause.
MAX_ATTRIBUTE_CHARS = 256

ReasonCode = Literal[
    "hash_mismatch", "object_not_found", "unparseable_payload", "invalid_payload",
    "unsupported_format",
]

_Attribute = Annotated[str | None, Field(max_length=MAX_ATTRIBUTE_CHARS)]
_Token = Annotated[str, Field(description="base64 HMAC-SHA256 (44 chars), or 64 zeros if blank")]


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt "dob" must not silently give blank tokens.
    model_config = ConfigDict(extra="forbid")


class PersonIn(_Strict):
    """Raw person attributes; missing, null and blank all mean "not known"."""

    first_name: _Attribute = None
    last_name: _Attribute = None
    birth_date: _Attribute = None
    sex: _Attribute = None
    postal_code: _Attribute = None
    ssn: _Attribute = None


class TokensRequest(_Strict):
    persons: list[PersonIn] = Field(min_length=1, max_length=MAX_PERSONS)


class TokenSet(_Strict):
    T1: _Token
    T2: _Token
    T3: _Token
    T4: _Token
    T5: _Token


class TokensResponse(_Strict):
    key_id: str = Field(description="Id of the key that made every token in this response")
    tokens: list[TokenSet] = Field(description="One entry per person, in request order")


class ObjectReference(_Strict):
    object_key: str = Field(pattern=r"^raw/[\x21-\x7e]{1,1020}$",
                            description="Key of a raw object (under raw/, no . or .. segments)")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$",
                        description="SHA-256 of the object's bytes, as recorded at ingest")

    @field_validator("object_key")
    @classmethod
    def _no_dot_segments(cls, key: str) -> str:
        # Only raw payloads may be read through this service, never a neighbouring prefix.
        if any(segment in (".", "..", "") for segment in key.split("/")):
            raise ValueError("object_key must not contain empty, . or .. segments")
        return key


class DeidentifyRequest(_Strict):
    items: list[ObjectReference] = Field(min_length=1, max_length=MAX_REFERENCES)


class PersonOut(_Strict):
    tokens: TokenSet
    key_id: str
    birth_year: int | None
    postal_code3: str | None = Field(description="US ZIP3 or Canadian FSA")
    sex: Literal["male", "female"] | None


class EncounterOut(_Strict):
    encounter_id: str
    class_: str = Field(alias="class")
    start: str
    end: str | None


class ConditionOut(_Strict):
    encounter_id: str
    system: str
    code: str
    display: str | None
    onset: str | None


class ObservationOut(_Strict):
    encounter_id: str
    system: str
    code: str
    value_num: float | None
    value_text: str | None
    unit: str | None
    effective: str


class DeidentifiedRecord(_Strict):
    """Tokens plus the clinical part; no names, SSN, MRN, address, contact or exact dates/ZIP."""

    schema_version: Literal[1]
    source_format: Literal["record.v1"]
    person: PersonOut
    encounters: list[EncounterOut]
    conditions: list[ConditionOut]
    observations: list[ObservationOut]


class FhirEncounterOut(_Strict):
    encounter_id: str = Field(description="Encounter.id, else the entry fullUrl without urn:uuid:")
    class_: str | None = Field(alias="class", description="Encounter.class.code")
    start: str | None = Field(description="Encounter.period.start (FHIR dateTime)")
    end: str | None = Field(description="Encounter.period.end (FHIR dateTime)")


class FhirConditionOut(_Strict):
    condition_id: str = Field(description="Condition.id, else the entry fullUrl without urn:uuid:")
    encounter_id: str | None = Field(description="The referenced encounter's id, if any")
    system: str | None = Field(description="Condition.code.coding[0].system")
    code: str | None = Field(description="Condition.code.coding[0].code")
    display: str | None = Field(description="Condition.code.coding[0].display")
    onset: str | None = Field(description="Condition.onsetDateTime (else onsetPeriod.start)")


class FhirObservationOut(_Strict):
    observation_id: str = Field(
        description="Observation.id, else the entry fullUrl without urn:uuid:")
    encounter_id: str | None = Field(description="The referenced encounter's id, if any")
    system: str | None = Field(description="Observation.code.coding[0].system")
    code: str | None = Field(description="Observation.code.coding[0].code")
    value_num: float | None = Field(description="valueQuantity.value (or valueInteger)")
    value_text: str | None = Field(
        description="valueString, valueCodeableConcept text (else first display), valueBoolean")
    unit: str | None = Field(description="valueQuantity.unit (else its code)")
    effective: str | None = Field(
        description="effectiveDateTime (else effectivePeriod.start, effectiveInstant)")


class DeidentifiedFhirBundle(_Strict):
    """A FHIR R4 bundle: tokens plus one row per Encounter, Condition and Observation; no PII."""

    schema_version: Literal[2]
    source_format: Literal["fhir-r4-bundle"]
    person: PersonOut
    encounters: list[FhirEncounterOut]
    conditions: list[FhirConditionOut]
    observations: list[FhirObservationOut]


class DeidentifyOk(_Strict):
    object_key: str
    status: Literal["ok"]
    record: Annotated[Union[DeidentifiedRecord, DeidentifiedFhirBundle],
                      Field(discriminator="source_format")]


class DeidentifyFailed(_Strict):
    """A permanent per-object fault: the caller dead-letters it; retrying will not help."""

    object_key: str
    status: Literal["error"]
    reason_code: ReasonCode
    detail: str = Field(description="What failed (rules, paths); never payload values")


class DeidentifyResponse(_Strict):
    key_id: str
    results: list[Annotated[Union[DeidentifyOk, DeidentifyFailed], Field(discriminator="status")]]
