"""deidentify_v1 / deidentify: the output shape, and that no PII survives."""

from __future__ import annotations

from typing import Any, Iterator

import orjson
import pytest

from support.records import canary_record, v1_record
from tokenizer.deidentify import DeidentifyError, deidentify, deidentify_v1
from tokenizer.keys import ActiveKey
from tokenizer.models import DeidentifiedRecord
from tokenizer.opentoken import PersonAttributes, TokenHasher, tokenize

PII_KEYS = {"first_name", "last_name", "name", "ssn", "mrn", "birth_date", "postal_code",
            "address", "phone", "telecom", "email"}
SECRET = b"HashingKey-for-tests-0001"
KEY = ActiveKey("k2", TokenHasher(SECRET))


def walk(node: Any, path: str = "$") -> Iterator[tuple[str, str | None, Any]]:
    """Every (path, key, leaf value) in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, None
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")
    else:
        yield path, None, node


def person_of(record: dict) -> PersonAttributes:
    p = record["patient"]
    return PersonAttributes(p["first_name"], p["last_name"], p["birth_date"], p["sex"],
                            p["postal_code"], p.get("ssn"))


def test_output_has_exactly_the_documented_shape():
    record = v1_record()
    out = deidentify_v1(record, KEY)

    DeidentifiedRecord.model_validate(out)  # extra="forbid" all the way down
    assert set(out) == {"schema_version", "source_format", "person", "encounters", "conditions",
                        "observations"}
    assert out["schema_version"] == 1 and out["source_format"] == "record.v1"
    assert set(out["person"]) == {"tokens", "key_id", "birth_year", "postal_code3", "sex"}
    encounter = record["encounter"]
    assert out["encounters"] == [{"encounter_id": encounter["encounter_id"], "class": "ambulatory",
                                  "start": encounter["start"], "end": encounter["end"]}]
    assert out["conditions"] == [{"encounter_id": encounter["encounter_id"],
                                  "system": "http://snomed.info/sct", "code": "44054006",
                                  "display": "Diabetes mellitus type 2", "onset": None}]
    assert out["observations"] == [{"encounter_id": encounter["encounter_id"],
                                    "system": "http://loinc.org", "code": "4548-4",
                                    "value_num": 6.3, "value_text": None, "unit": "%",
                                    "effective": "2026-11-30T09:20:00Z"}]


def test_no_pii_key_and_no_pii_value_anywhere_in_the_output():
    record, canaries = canary_record()
    patient = record["patient"]
    pii_values = canaries + [patient["birth_date"], patient["postal_code"],
                             patient["ssn"].replace("-", "")]
    out = deidentify(record, KEY)

    for path, key, value in walk(out):
        assert key not in PII_KEYS, f"PII key {key!r} at {path}"
        if isinstance(value, str):
            for pii in pii_values:
                assert pii not in value, f"PII value at {path}"
    serialized = orjson.dumps(out).decode()
    for pii in pii_values:
        assert pii not in serialized


def test_tokens_equal_opentoken_for_the_same_person_and_carry_the_key_id():
    record = v1_record()
    out = deidentify_v1(record, KEY)
    assert out["person"]["tokens"] == tokenize(person_of(record), TokenHasher(SECRET))
    assert out["person"]["key_id"] == "k2"
    assert all(len(token) == 44 for token in out["person"]["tokens"].values())


@pytest.mark.parametrize("birth_date, postal_code, sex, expected", [
    ("1985-12-10", "02139", "female", (1985, "021", "female")),
    ("1960-01-31", "98101-1234", "M", (1960, "981", "male")),
    ("1999-02-28", "M5V 3L9", "Female", (1999, "M5V", "female")),
    ("1905-05-05", "12345", "MALE", (None, None, None)),   # before 1910; denied ZIP; bad case
    ("2999-01-01", "abc", "unknown", (None, None, None)),  # future; not a postal code
    ("1980-02-30", "0213", "f", (None, "021", "female")),  # no Feb 30; ZIP4 pads right
])
def test_birth_year_zip3_and_sex_follow_the_opentoken_rules(birth_date, postal_code, sex, expected):
    record = v1_record(birth_date=birth_date, postal_code=postal_code, sex=sex)
    person = deidentify_v1(record, KEY)["person"]
    assert (person["birth_year"], person["postal_code3"], person["sex"]) == expected


def test_observation_values_split_into_number_and_text():
    record = v1_record()
    base = record["encounter"]["observations"][0]
    record["encounter"]["observations"] = [
        {**base, "value": 7}, {**base, "value": "positive"}, {**base, "value": True},
        {k: v for k, v in base.items() if k != "unit"} | {"value": False},
    ]
    observations = deidentify(record, KEY)["observations"]
    assert [(o["value_num"], o["value_text"], o["unit"]) for o in observations] == [
        (7, None, "%"), (None, "positive", "%"), (None, "true", "%"), (None, "false", None)]


def test_optional_clinical_fields_become_null():
    record = v1_record(ssn=None)
    del record["patient"]["ssn"], record["patient"]["mrn"], record["encounter"]["end"]
    del record["encounter"]["diagnoses"][0]["display"]
    out = deidentify(record, KEY)
    assert out["encounters"][0]["end"] is None
    assert out["conditions"][0]["display"] is None
    assert out["person"]["tokens"]["T4"] == "0" * 64  # no SSN: blank T4


def test_a_bundle_without_a_patient_is_an_invalid_payload():
    with pytest.raises(DeidentifyError) as raised:
        deidentify({"resourceType": "Bundle", "type": "collection", "entry": []}, KEY)
    assert raised.value.reason_code == "invalid_payload"


@pytest.mark.parametrize("mutate", [
    lambda r: r["patient"].pop("birth_date"),
    lambda r: r["patient"].update(birth_date="10/12/1985"),
    lambda r: r["encounter"].update(start="yesterday"),
    lambda r: r.update(extra_field="x"),
])
def test_schema_invalid_v1_is_invalid_payload_without_values(mutate):
    record, canaries = canary_record()
    mutate(record)
    with pytest.raises(DeidentifyError) as raised:
        deidentify(record, KEY)
    assert raised.value.reason_code == "invalid_payload"
    assert "record.v1: $" in raised.value.detail
    for value in canaries + ["10/12/1985", "yesterday", record["patient"].get("birth_date", "-")]:
        assert value not in raised.value.detail


@pytest.mark.parametrize("document", [[], "text", 42, None, {"resourceType": "Patient"}])
def test_non_record_documents_are_invalid_payload(document):
    with pytest.raises(DeidentifyError) as raised:
        deidentify(document, KEY)
    assert raised.value.reason_code == "invalid_payload"
