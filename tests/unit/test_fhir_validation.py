"""ingest_api.fhir_validation: the /v2/ingest bundle rules on small handcrafted bundles and on the
sample set; the rules agree with contracts/payloads/fhir-bundle.v2.schema.json where JSON Schema
can express them."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import orjson
import pytest

from ingest_api.fhir_validation import MAX_LISTED_VIOLATIONS, check_bundle, patient_record_id
from ingest_api.payload_validation import validator_for
from ingest_api.routes.ingest import V2_SCHEMA

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "fhir"
REFERENCE_DATA_PREFIXES = ("hospitalInformation", "practitionerInformation")


def sample_files(*, patients: bool) -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*/*.json")
                  if p.name.startswith(REFERENCE_DATA_PREFIXES) != patients)


PATIENT_ID = "9a0d7938-4f49-43f6-8eea-b22e1bbe1b74"
PATIENT_URL = f"urn:uuid:{PATIENT_ID}"
ENCOUNTER_URL = f"urn:uuid:{uuid.UUID(int=2)}"


def entry(resource: dict, full_url: str | None = None, method: str | None = "POST") -> dict:
    item: dict = {"resource": resource}
    if full_url is not None:
        item["fullUrl"] = full_url
    if method is not None:
        item["request"] = {"method": method, "url": "Resource"}
    return item


def bundle(*entries: dict, kind: str = "transaction", **top) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries), **top}


def patient(**fields) -> dict:
    return {"resourceType": "Patient", "id": PATIENT_ID, "name": [{"family": "Doe", "given": ["Jo"]}],
            **fields}


def minimal(kind: str = "transaction", **top) -> dict:
    """A Patient and an Encounter that references it by urn:uuid."""
    return bundle(
        entry(patient(), PATIENT_URL),
        entry({"resourceType": "Encounter", "id": "e1", "subject": {"reference": PATIENT_URL}},
              ENCOUNTER_URL),
        kind=kind, **top,
    )


def rules(check) -> set[tuple[str, str]]:
    return {(v.path, v.rule) for v in check.violations}


# --- accepted ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["collection", "batch", "transaction"])
def test_minimal_bundle_of_each_type_is_accepted(kind):
    check = check_bundle(minimal(kind))
    assert check.ok, check.violations
    assert check.bundle_type == kind and check.entry_count == 2 and check.patient_count == 1


def test_collection_entries_need_no_request():
    doc = bundle(entry(patient(), PATIENT_URL, method=None), kind="collection")
    assert check_bundle(doc).ok


def test_conditional_relative_absolute_and_contained_references_are_legal_and_not_resolved():
    doc = minimal()
    doc["entry"].append(entry({
        "resourceType": "ExplanationOfBenefit",
        "contained": [{"resourceType": "ServiceRequest", "id": "referral",
                       "subject": {"reference": PATIENT_URL},
                       "requester": {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999994392"}}],
        "patient": {"reference": PATIENT_URL},
        "referral": {"reference": "#referral"},
        "provider": {"reference": "Organization?identifier=https://github.com/synthetichealth/synthea|ef58ea08"},
        "facility": {"reference": "Location?identifier=https://github.com/synthetichealth/synthea|cf49c5e3"},
        "insurer": {"reference": "Organization/123"},
        "enterer": {"reference": "https://fhir.example.org/Practitioner/77"},
        "careTeam": [{"provider": {"reference": "Patient/123"}}],
    }, f"urn:uuid:{uuid.uuid4()}"))
    check = check_bundle(doc)
    assert check.ok, check.violations


def test_references_inside_contained_and_nested_lists_are_resolved():
    doc = minimal()
    doc["entry"][1]["resource"]["contained"] = [
        {"resourceType": "Coverage", "beneficiary": {"reference": PATIENT_URL}},
    ]
    doc["entry"][1]["resource"]["participant"] = [{"individual": [[{"reference": ENCOUNTER_URL}]]}]
    assert check_bundle(doc).ok


# --- record id ----------------------------------------------------------------------------------

def test_record_id_prefers_identifier_value_then_bundle_id_then_patient_id_then_full_url():
    doc = minimal(identifier={"system": "https://partner.example", "value": "bundle-ident-1"}, id="bundle-id-1")
    assert (check_bundle(doc).record_id, check_bundle(doc).record_id_source) == ("bundle-ident-1",
                                                                              "Bundle.identifier.value")
    del doc["identifier"]
    assert check_bundle(doc).record_id == "bundle-id-1"
    del doc["id"]
    # The Patient id is often the MRN: only its digest becomes the record id.
    assert (check_bundle(doc).record_id, check_bundle(doc).record_id_source) == (
        patient_record_id(PATIENT_ID), "Patient.id")
    assert PATIENT_ID not in check_bundle(doc).record_id
    del doc["entry"][0]["resource"]["id"]
    check = check_bundle(doc)
    assert (check.record_id, check.record_id_source) == (patient_record_id(PATIENT_ID), "Patient fullUrl")
    doc["entry"][0]["fullUrl"] = "https://fhir.example.org/Patient/42"
    assert check_bundle(doc).record_id == patient_record_id("https://fhir.example.org/Patient/42")


def test_identifier_without_value_falls_through():
    doc = minimal(identifier={"system": "https://partner.example"})
    assert check_bundle(doc).record_id == patient_record_id(PATIENT_ID)


def test_no_record_id_at_all_is_refused():
    doc = minimal()
    del doc["entry"][0]["resource"]["id"]
    del doc["entry"][0]["fullUrl"]
    del doc["entry"][1]["resource"]["subject"]
    check = check_bundle(doc)
    assert rules(check) == {("$", "record-id")}


@pytest.mark.parametrize("where", ["identifier", "id", "patient"])
def test_record_id_longer_than_128_characters_is_refused(where):
    doc = minimal()
    long = "x" * 129
    if where == "identifier":
        doc["identifier"] = {"value": long}
        expected = ("$.identifier.value", "record-id")
    elif where == "id":
        doc["id"] = long
        expected = ("$.id", "record-id")
    else:
        doc["entry"][0]["resource"]["id"] = long
        expected = ("$.entry[0].resource.id", "record-id")
    check = check_bundle(doc)
    assert rules(check) == {expected}
    assert long not in json.dumps(check.errors())


def test_non_string_identifier_and_id_are_type_errors():
    check = check_bundle(minimal(identifier={"value": 7}, id=["x"]))
    assert rules(check) == {("$.identifier.value", "type"), ("$.id", "type")}
    assert rules(check_bundle(minimal(identifier="abc"))) == {("$.identifier", "type")}


# --- refused --------------------------------------------------------------------------------

@pytest.mark.parametrize("document", [[], "Bundle", 3, None])
def test_body_must_be_an_object(document):
    assert rules(check_bundle(document)) == {("$", "type")}


@pytest.mark.parametrize("resource_type, rule", [("Patient", "bundle-resource-type"),
                                                 ("bundle", "bundle-resource-type"),
                                                 (None, "required"), (1, "bundle-resource-type")])
def test_wrong_resource_type_is_the_only_violation_reported(resource_type, rule):
    doc = {"resourceType": resource_type, "id": "x", "name": [{"family": "Doe"}]}
    if resource_type is None:
        del doc["resourceType"]
    check = check_bundle(doc)
    assert rules(check) == {("$.resourceType", rule)}
    assert check.total_violations == 1


@pytest.mark.parametrize("kind", ["searchset", "document", "history", "message", "", 5, None])
def test_bundle_type_must_be_collection_batch_or_transaction(kind):
    doc = minimal()
    if kind is None:
        del doc["type"]
    else:
        doc["type"] = kind
    check = check_bundle(doc)
    assert rules(check) == {("$.type", "required" if kind is None else "bundle-type")}


def test_entry_must_be_a_list():
    doc = minimal()
    doc["entry"] = {"resource": patient()}
    assert rules(check_bundle(doc)) == {("$.entry", "type")}
    del doc["entry"]
    assert rules(check_bundle(doc)) == {("$.entry", "required")}


def test_entry_items_need_a_resource_object_with_a_string_resource_type():
    doc = minimal()
    doc["entry"] += [
        "not an object",
        {"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000009", "request": {"method": "POST", "url": "X"}},
        entry([1, 2]),
        entry({"id": "no-type"}),
        entry({"resourceType": 3}),
        entry({"resourceType": ""}),
        {"fullUrl": 17, "resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "O"}},
    ]
    assert rules(check_bundle(doc)) == {
        ("$.entry[2]", "type"),
        ("$.entry[3].resource", "required"),
        ("$.entry[4].resource", "type"),
        ("$.entry[5].resource.resourceType", "required"),
        ("$.entry[6].resource.resourceType", "type"),
        ("$.entry[7].resource.resourceType", "min-length"),
        ("$.entry[8].fullUrl", "type"),
    }


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_batch_and_transaction_entries_need_a_request_with_method_and_url(kind):
    doc = minimal(kind)
    doc["entry"] += [
        entry({"resourceType": "Observation"}, method=None),
        {"resource": {"resourceType": "Observation"}, "request": "POST Observation"},
        {"resource": {"resourceType": "Observation"}, "request": {"url": "Observation"}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "FETCH", "url": "Observation"}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "post", "url": "Observation"}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "POST"}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "PUT", "url": ""}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "PUT", "url": 5}},
    ]
    assert rules(check_bundle(doc)) == {
        ("$.entry[2].request", "required"),
        ("$.entry[3].request", "type"),
        ("$.entry[4].request.method", "required"),
        ("$.entry[5].request.method", "request-method"),
        ("$.entry[6].request.method", "request-method"),
        ("$.entry[7].request.url", "required"),
        ("$.entry[8].request.url", "min-length"),
        ("$.entry[9].request.url", "type"),
    }


def test_no_patient_is_refused_and_says_reference_data_bundles_are_not_accepted():
    doc = bundle(entry({"resourceType": "Organization", "id": "o1"}, "urn:uuid:" + str(uuid.uuid4())),
                 entry({"resourceType": "Practitioner", "id": "p1"}, "urn:uuid:" + str(uuid.uuid4())),
                 kind="batch")
    check = check_bundle(doc)
    assert rules(check) == {("$.entry", "exactly-one-patient")}
    assert check.patient_count == 0 and check.record_id is None
    detail = check.detail()
    assert "no Patient" in detail and "reference-data bundles" in detail and "not accepted" in detail


def test_empty_entry_list_has_no_patient():
    assert rules(check_bundle(bundle())) == {("$.entry", "exactly-one-patient")}


def test_two_patients_are_refused():
    doc = minimal()
    doc["entry"].append(entry(patient(id="other"), f"urn:uuid:{uuid.uuid4()}"))
    check = check_bundle(doc)
    assert rules(check) == {("$.entry", "exactly-one-patient")}
    assert check.patient_count == 2
    assert "2 Patient entries" in check.detail() and "one bundle per patient" in check.detail()


def test_a_contained_patient_does_not_count_as_the_patient():
    doc = bundle(entry({"resourceType": "Encounter", "contained": [patient()]}, f"urn:uuid:{uuid.uuid4()}"))
    assert rules(check_bundle(doc)) == {("$.entry", "exactly-one-patient")}


def test_dangling_urn_uuid_references_are_listed_by_exact_path():
    doc = minimal()
    missing = f"urn:uuid:{uuid.uuid4()}"
    doc["entry"][1]["resource"]["serviceProvider"] = {"reference": missing}
    doc["entry"][1]["resource"]["participant"] = [
        {"individual": {"reference": ENCOUNTER_URL}},
        {"individual": {"reference": missing}},
    ]
    doc["entry"][1]["resource"]["contained"] = [{"resourceType": "Coverage", "payor": [{"reference": missing}]}]
    check = check_bundle(doc)
    assert rules(check) == {
        ("$.entry[1].resource.serviceProvider.reference", "reference-resolves"),
        ("$.entry[1].resource.participant[1].individual.reference", "reference-resolves"),
        ("$.entry[1].resource.contained[0].payor[0].reference", "reference-resolves"),
    }
    assert missing not in json.dumps(check.errors()) + check.detail()


def test_reference_must_match_full_url_exactly():
    doc = minimal()
    doc["entry"][1]["resource"]["subject"]["reference"] = PATIENT_URL.upper().replace("URN:UUID:", "urn:uuid:")
    assert rules(check_bundle(doc)) == {("$.entry[1].resource.subject.reference", "reference-resolves")}


def test_non_element_keys_are_masked_in_paths():
    doc = minimal()
    doc["entry"][1]["resource"]["Jane Q. Public 999-12-3456"] = {"reference": f"urn:uuid:{uuid.uuid4()}"}
    check = check_bundle(doc)
    assert rules(check) == {("$.entry[1].resource.*.reference", "reference-resolves")}


def test_deep_nesting_does_not_recurse():
    doc = minimal()
    node: dict = {"reference": f"urn:uuid:{uuid.uuid4()}"}
    for _ in range(20_000):
        node = {"extension": [node]}
    doc["entry"][1]["resource"]["extension"] = [node]
    check = check_bundle(doc)
    assert [v.rule for v in check.violations] == ["reference-resolves"]


def test_violations_are_capped_but_counted():
    doc = minimal()
    doc["entry"] += ["junk"] * 500
    check = check_bundle(doc)
    assert len(check.violations) == MAX_LISTED_VIOLATIONS
    assert check.total_violations == 500
    assert "500 violations in all, first 50 listed" in check.detail()


def test_no_payload_value_ever_appears_in_violations():
    canary = "Zqcanary" + uuid.uuid4().hex[:8]
    doc = {
        "resourceType": "Bundle", "type": canary, "id": canary * 20, "identifier": {"value": 5},
        "entry": [
            canary,
            {"fullUrl": {"x": canary}, "resource": {"resourceType": [canary]}},
            {"resource": patient(name=[{"family": canary}]), "request": {"method": canary, "url": [canary]}},
            {"resource": patient(id=canary), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Encounter", canary: {"reference": "urn:uuid:" + canary}},
             "request": {"method": "POST", "url": "Encounter"}},
        ],
    }
    check = check_bundle(doc)
    assert check.total_violations >= 8
    assert canary not in json.dumps(check.errors()) + check.detail()
    assert canary not in json.dumps(check_bundle({"resourceType": canary}).errors())


def test_detail_leads_with_the_patient_rule():
    doc = bundle(entry({"resourceType": "Organization"}, method=None), "junk")
    check = check_bundle(doc)
    assert check.total_violations == 3
    assert check.detail().startswith("the bundle holds no Patient")
    assert "(3 violations in all; see errors)" in check.detail()


def test_input_is_not_modified():
    doc = minimal()
    doc["entry"].append("junk")
    before = copy.deepcopy(doc)
    check_bundle(doc)
    assert doc == before


# --- the sample set --------------------------------------------------------------------------

@pytest.mark.parametrize("path", sample_files(patients=True), ids=lambda p: p.name[:24])
def test_every_sample_patient_bundle_is_accepted(path):
    doc = orjson.loads(path.read_bytes())
    check = check_bundle(doc)
    assert check.ok, check.violations
    patient_entry = next(e for e in doc["entry"] if e["resource"]["resourceType"] == "Patient")
    assert check.record_id == patient_record_id(patient_entry["resource"]["id"])
    assert validator_for(V2_SCHEMA).is_valid(doc)


@pytest.mark.parametrize("path", sample_files(patients=False), ids=lambda p: p.name[:24])
def test_reference_data_samples_fail_only_the_patient_rule(path):
    doc = orjson.loads(path.read_bytes())
    check = check_bundle(doc)
    assert rules(check) == {("$.entry", "exactly-one-patient")}
    assert "reference-data bundles" in check.detail()
    assert not validator_for(V2_SCHEMA).is_valid(doc)


def test_sample_set_is_representative():
    patients = sample_files(patients=True)
    assert len(patients) >= 6 and sample_files(patients=False)
    assert any(not p.name.isascii() for p in patients)
    kinds = {orjson.loads(p.read_bytes())["type"] for p in patients}
    assert kinds == {"batch", "transaction"}
    assert sum(p.stat().st_size for p in SAMPLES.rglob("*.json")) < 8_000_000


# --- contract parity ---------------------------------------------------------------------------

def _parity_cases() -> list[dict]:
    cases = [minimal(k) for k in ("collection", "batch", "transaction")]
    cases.append(bundle(entry(patient(), PATIENT_URL, method=None), kind="collection"))
    cases.append(bundle())                                           # no patient
    two = minimal()
    two["entry"].append(entry(patient(id="x"), "urn:uuid:1"))
    cases.append(two)                                                # two patients
    cases.append({"resourceType": "Patient"})
    cases.append(minimal(kind="searchset"))
    no_request = minimal("batch")
    del no_request["entry"][1]["request"]
    cases.append(no_request)
    bad_method = minimal("transaction")
    bad_method["entry"][1]["request"]["method"] = "FETCH"
    cases.append(bad_method)
    cases.append(minimal(id="y" * 129))
    cases.append(minimal(identifier={"value": ""}))
    not_object = minimal()
    not_object["entry"].append(3)
    cases.append(not_object)
    return cases


@pytest.mark.parametrize("document", _parity_cases())
def test_validator_agrees_with_the_json_schema_contract(document):
    assert check_bundle(document).ok == validator_for(V2_SCHEMA).is_valid(document)


def test_rules_beyond_json_schema_are_only_in_the_validator():
    dangling = minimal()
    dangling["entry"][1]["resource"]["subject"]["reference"] = f"urn:uuid:{uuid.uuid4()}"
    assert validator_for(V2_SCHEMA).is_valid(dangling)
    assert not check_bundle(dangling).ok
