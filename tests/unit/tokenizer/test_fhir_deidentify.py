"""deidentify / deidentify_fhir_bundle on FHIR R4 bundles: one row per clinical resource, the
OpenToken vectors' tokens, and no PII of the Patient anywhere in the output."""

from __future__ import annotations

import copy
import csv
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from exchange_assets.lib.canonical import rows_for_record
from exchange_assets.lib.tokenization import find_pii_keys
from ingest_api.fhir_validation import check_bundle
from support.vectors import SHARED_VECTORS, VECTORS
from tokenizer.deidentify import DeidentifyError, deidentify
from tokenizer.fhir_deidentify import deidentify_fhir_bundle
from tokenizer.keys import ActiveKey
from tokenizer.models import DeidentifiedFhirBundle, DeidentifyResponse
from tokenizer.opentoken import BLANK_TOKEN, TOKEN_RULES, PersonAttributes, TokenHasher, tokenize

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLES = REPO_ROOT / "tests" / "data" / "fhir"
SHARED = REPO_ROOT.parent / "shared" / "data"
SHARED_BUNDLES = SHARED / "synthea"
SECRET = "HashingKey-for-tests-0001"
KEY = ActiveKey("k1", TokenHasher(SECRET))

PATIENT_BUNDLES = sorted(p for p in SAMPLES.glob("*/*.json") if "Information" not in p.name)
REFERENCE_DATA_BUNDLE = SAMPLES / "NimbusInformatics__bdcat-fhir-azure-prototype" / \
    "hospitalInformation1603148702656.json"
CLINICAL = {"Encounter": "encounters", "Condition": "conditions", "Observation": "observations"}
# Keys that must appear nowhere in the output: the v1 test's list, FHIR's names for the same
# things, and the pipeline's own no_plaintext_pii list (checked separately below).
PII_KEYS = {"first_name", "last_name", "name", "given", "family", "ssn", "mrn", "birth_date",
            "birthDate", "postal_code", "postalCode", "address", "line", "city", "phone",
            "telecom", "email", "identifier", "text", "extension", "subject", "patient",
            "participant", "individual", "performer", "reference", "contact", "communication",
            "maritalStatus", "div"}
# The clinical datetimes, where the birth date may legitimately occur (an encounter at birth).
CLINICAL_DATE_KEYS = {"start", "end", "onset", "effective"}
MIN_PII_CHARS = 5


def load(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes())


def walk(node: Any, path: str = "$",
         key: str | None = None) -> Iterator[tuple[str, str | None, Any]]:
    """Every (path, key of the leaf, leaf) of a JSON document; dict keys as (path, key, None)."""
    if isinstance(node, dict):
        for child_key, value in node.items():
            yield path, child_key, None
            yield from walk(value, f"{path}.{child_key}", child_key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]", key)
    else:
        yield path, key, node


def strings(node: Any) -> Iterator[str]:
    for _, _, value in walk(node):
        if isinstance(value, str):
            yield value


def patient_entry(bundle: dict) -> dict:
    (entry,) = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return entry


def patient_pii(bundle: dict) -> list[str]:
    """The Patient's PII values, read independently of the code under test (length >= 5)."""
    entry = patient_entry(bundle)
    patient = entry["resource"]
    full_url = entry["fullUrl"]
    values: list[str] = [patient["id"], full_url, full_url.removeprefix("urn:uuid:")]
    for name in patient.get("name", []):
        values += name.get("given", []) + [name.get("family", "")] + name.get("prefix", [])
    for address in patient.get("address", []):
        values += address.get("line", []) + [address.get("city", ""), address.get("postalCode", "")]
    values += [t["value"] for t in patient.get("telecom", [])
               if t.get("system") in ("phone", "email")]
    values += [i["value"] for i in patient.get("identifier", [])]
    values += [i["value"].replace("-", "") for i in patient.get("identifier", [])]
    # Extensions: mother's maiden name (and its parts), birthplace city.
    for _, key, value in walk(patient.get("extension", [])):
        if key in ("valueString", "city") and isinstance(value, str):
            values += [value, *value.split()]
    # Names in Reference displays anywhere ("Mrs. Kallie862 Frami345", "Dr. Bradford382 ...").
    for other in bundle["entry"]:
        for path, key, value in walk(other["resource"]):
            if key == "display" and isinstance(value, str) and ".display" in path and \
                    any(part in path for part in ("subject", "participant", "individual",
                                                  "serviceProvider", "performer", "requester")):
                values.append(value)
    return sorted({v for v in values if isinstance(v, str) and len(v) >= MIN_PII_CHARS})


def vector_rows() -> dict[str, dict[str, str]]:
    """fhir-as-is vector rows by bundle path relative to the shared synthea mirror."""
    with open(VECTORS, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["variant"] == "fhir-as-is"]
    by_file = {}
    for row in rows:
        _, repo, file_name = row["origin"].split(":", 2)
        by_file[f"{repo.replace('/', '__')}/{file_name}"] = row
    return by_file


def sample_id(path: Path) -> str:
    return path.name.split("_")[0]


# -- the six sample patient bundles --------------------------------------------------------------


def test_the_sample_set_is_what_the_tests_expect():
    assert len(PATIENT_BUNDLES) == 6
    assert all(check_bundle(load(p)).ok for p in PATIENT_BUNDLES)


@pytest.mark.parametrize("path", PATIENT_BUNDLES, ids=sample_id)
def test_one_row_per_encounter_condition_and_observation(path):
    bundle = load(path)
    expected = Counter(e["resource"]["resourceType"] for e in bundle["entry"])

    out = deidentify(bundle, KEY)

    DeidentifiedFhirBundle.model_validate(out)  # extra="forbid" all the way down
    assert set(out) == {"schema_version", "source_format", "person", "encounters", "conditions",
                        "observations"}
    assert (out["schema_version"], out["source_format"]) == (2, "fhir-r4-bundle")
    for resource_type, key in CLINICAL.items():
        assert len(out[key]) == expected[resource_type] > 0, resource_type
    # Ids: the resources' own ids, in entry order (every sample resource has one).
    for resource_type, key in CLINICAL.items():
        ids = [e["resource"]["id"] for e in bundle["entry"]
               if e["resource"]["resourceType"] == resource_type]
        id_key = {"encounters": "encounter_id", "conditions": "condition_id",
                  "observations": "observation_id"}[key]
        assert [row[id_key] for row in out[key]] == ids
    # Every clinical row of the samples names an encounter of the same bundle.
    encounter_ids = {row["encounter_id"] for row in out["encounters"]}
    for row in out["conditions"] + out["observations"]:
        assert row["encounter_id"] in encounter_ids


@pytest.mark.parametrize("path", PATIENT_BUNDLES, ids=sample_id)
def test_the_pipeline_consumes_the_output_row_for_row(path):
    bundle = load(path)
    out = deidentify(bundle, KEY)

    person, encounters, conditions, observations = rows_for_record("partner-1", "rec-1", "k1", out)

    assert person[2:7] == tuple(out["person"]["tokens"][rule] for rule in TOKEN_RULES)
    assert person[7:] == ("k1", out["person"]["birth_year"], out["person"]["postal_code3"],
                          out["person"]["sex"])
    assert len(encounters) == len(out["encounters"])
    assert len(conditions) == len(out["conditions"])
    assert len(observations) == len(out["observations"])
    # Natural keys are the resources' ids (not positions), unique, and the times parse.
    assert len({c[1] for c in conditions}) == len(conditions)
    assert len({o[1] for o in observations}) == len(observations)
    assert all(e[4] is not None for e in encounters)
    assert all(o[10] is not None for o in observations)
    with_value = [o for o in observations if o[7] is not None or o[8] is not None]
    panels = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
                 and not any(k.startswith("value") for k in e["resource"]))
    assert len(observations) - len(with_value) == panels


@pytest.mark.parametrize("path", PATIENT_BUNDLES, ids=sample_id)
def test_no_pii_key_and_no_pii_value_of_the_patient_in_the_output(path):
    bundle = load(path)
    patient = patient_entry(bundle)["resource"]
    pii = patient_pii(bundle)
    assert len(pii) >= 8  # the extraction itself works: names, line, ids, phone, ...

    out = deidentify(bundle, KEY)
    serialized = orjson.dumps(out).decode()

    assert find_pii_keys(out) == []  # the pipeline's no_plaintext_pii list
    for where, key, _ in walk(out):
        assert key not in PII_KEYS, f"PII key {key!r} at {where}"
    for value in pii:
        assert value not in serialized, f"a Patient PII value ({len(value)} chars) in the output"
    # The birth date: only where it is a clinical date (an encounter on the day of birth), never
    # elsewhere; only its year is in the person block.
    birth_date = patient["birthDate"]
    for where, key, value in walk(out):
        if isinstance(value, str) and birth_date in value:
            assert key in CLINICAL_DATE_KEYS, where
    assert birth_date not in orjson.dumps(out["person"]).decode()
    assert out["person"]["birth_year"] == int(birth_date[:4])
    # No narrative made it through either.
    assert "<div" not in serialized and "generated" not in serialized.lower()


@pytest.mark.parametrize("path", PATIENT_BUNDLES, ids=sample_id)
def test_the_input_document_is_not_modified(path):
    bundle = load(path)
    before = orjson.dumps(bundle)
    deidentify(bundle, KEY)
    assert orjson.dumps(bundle) == before


def test_sample_bundles_give_the_opentoken_vector_tokens():
    rows = vector_rows()
    checked = []
    for path in PATIENT_BUNDLES:
        row = rows.get(f"{path.parent.name}/{path.name}")
        if row is None:
            continue
        out = deidentify(load(path), KEY)
        assert out["person"]["tokens"] == {rule: row[rule] for rule in TOKEN_RULES}, row["row_id"]
        assert out["person"]["key_id"] == "k1"
        checked.append(path.parent.name)
    # At least the three smart-on-fhir bundles are in the vectors (in fact all six are).
    assert checked.count("smart-on-fhir__generated-sample-data") == 3
    assert len(checked) == 6


@pytest.mark.skipif(VECTORS != SHARED_VECTORS or not SHARED_BUNDLES.is_dir(),
                    reason="the shared Synthea mirror (41 bundles) is not next to this clone; "
                           "the in-repository bundles are checked by the test above")
def test_every_fhir_vector_row_from_its_bundle_in_the_shared_mirror():
    rows = vector_rows()
    missing = [name for name in rows if not (SHARED_BUNDLES / name).is_file()]
    assert not missing
    for name, row in rows.items():
        out = deidentify(load(SHARED_BUNDLES / name), KEY)
        assert out["person"]["tokens"] == {rule: row[rule] for rule in TOKEN_RULES}, row["row_id"]
    assert len(rows) == 41


def test_output_validates_inside_the_response_model():
    out = deidentify(load(PATIENT_BUNDLES[0]), KEY)
    response = DeidentifyResponse.model_validate(
        {"key_id": "k1", "results": [{"object_key": "raw/x.json", "status": "ok", "record": out}]})
    assert response.results[0].record.source_format == "fhir-r4-bundle"


# -- invalid bundles --------------------------------------------------------------------------


def small_bundle(*resources: dict, bundle_type: str = "collection") -> dict:
    patient = {"resourceType": "Patient", "id": "p-1",
               "name": [{"use": "official", "family": "Lovelace", "given": ["Augusta"]}],
               "birthDate": "1985-12-10", "gender": "female",
               "address": [{"line": ["12 Canary Row"], "city": "Cambridge", "postalCode": "02139"}],
               "identifier": [{"type": {"coding": [{"code": "SS"}]}, "value": "456-78-9012"}]}
    entries = [{"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001", "resource": patient}]
    for index, resource in enumerate(resources, start=2):
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{index:012d}",
                        "resource": resource})
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def test_reference_data_bundle_is_invalid_payload():
    with pytest.raises(DeidentifyError) as raised:
        deidentify(load(REFERENCE_DATA_BUNDLE), KEY)
    assert raised.value.reason_code == "invalid_payload"
    assert "exactly-one-patient" in raised.value.detail
    assert "reference-data bundles" in raised.value.detail


@pytest.mark.parametrize("mutate, rule", [
    (lambda b: b.update(type="searchset"), "bundle-type"),
    (lambda b: b["entry"].append(copy.deepcopy(b["entry"][0])), "exactly-one-patient"),
    (lambda b: b["entry"].pop(0), "exactly-one-patient"),
    (lambda b: b["entry"][1]["resource"].update(
        subject={"reference": "urn:uuid:Lovelace-Augusta-456789012"}), "reference-resolves"),
    (lambda b: b["entry"].append({"resource": "Lovelace"}), "type"),
    (lambda b: b.update(entry={"Lovelace": 1}), "type"),
])
def test_bundles_failing_the_ingest_rules_are_invalid_payload_without_values(mutate, rule):
    bundle = small_bundle({"resourceType": "Encounter", "id": "e-1", "class": {"code": "AMB"}})
    mutate(bundle)
    with pytest.raises(DeidentifyError) as raised:
        deidentify(bundle, KEY)
    assert raised.value.reason_code == "invalid_payload"
    assert f"({rule})" in raised.value.detail
    for value in ("Lovelace", "Augusta", "456-78-9012", "456789012", "1985-12-10", "02139",
                  "Canary", "Cambridge", "searchset"):
        assert value not in raised.value.detail


def test_the_old_empty_bundle_is_now_invalid_payload_not_unsupported():
    with pytest.raises(DeidentifyError) as raised:
        deidentify({"resourceType": "Bundle", "type": "collection", "entry": []}, KEY)
    assert raised.value.reason_code == "invalid_payload"


# -- field mapping on handcrafted bundles ---------------------------------------------------------


def test_fields_are_taken_from_the_documented_places():
    bundle = small_bundle(
        {"resourceType": "Encounter", "id": "enc-a", "class": {"code": "AMB", "display": "amb"},
         "period": {"start": "2020-01-01T10:00:00Z", "end": "2020-01-01T11:00:00Z"},
         "participant": [{"individual": {"reference": "Practitioner/1", "display": "Dr. Canary"}}],
         "text": {"div": "<div>Augusta Lovelace</div>"}},
        {"resourceType": "Encounter", "class": {"code": "EMER"}},  # no id, no period
        {"resourceType": "Condition", "id": "c-1",
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006",
                              "display": "Diabetes mellitus type 2"},
                             {"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11"}],
                  "text": "free text"},
         "encounter": {"reference": "Encounter/enc-a", "display": "Dr. Canary"},
         "onsetDateTime": "2019-05-01"},
        {"resourceType": "Condition", "code": {"text": "no coding"},
         "onsetPeriod": {"start": "2018"}},
        {"resourceType": "Observation", "id": "o-q",
         "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
         "encounter": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000003"},
         "effectivePeriod": {"start": "2020-01-01T10:05:00Z"},
         "valueQuantity": {"value": 6.3, "code": "%"}},
        {"resourceType": "Observation", "id": "o-cc", "code": {"coding": [{"code": "x"}]},
         "valueCodeableConcept": {"coding": [{"code": "266919005", "display": "Never smoker"}]}},
        {"resourceType": "Observation", "id": "o-cc-text", "code": {"coding": [{"code": "x"}]},
         "valueCodeableConcept": {"coding": [{"display": "coded"}], "text": "as text"}},
        {"resourceType": "Observation", "id": "o-s", "valueString": "positive"},
        {"resourceType": "Observation", "id": "o-t", "valueBoolean": True},
        {"resourceType": "Observation", "id": "o-f", "valueBoolean": False},
        {"resourceType": "Observation", "id": "o-i", "valueInteger": 7},
        {"resourceType": "Observation", "id": "o-panel", "effectiveInstant": "2020-01-01T10:00:00Z",
         "component": [{"code": {"coding": [{"code": "8480-6"}]}, "valueQuantity": {"value": 120}}],
         "encounter": {"reference": "Encounter?identifier=urn:x|1"}},
        {"resourceType": "Procedure", "id": "ignored"},
    )

    out = deidentify(bundle, KEY)

    DeidentifiedFhirBundle.model_validate(out)
    assert out["encounters"] == [
        {"encounter_id": "enc-a", "class": "AMB", "start": "2020-01-01T10:00:00Z",
         "end": "2020-01-01T11:00:00Z"},
        {"encounter_id": "00000000-0000-4000-8000-000000000003", "class": "EMER", "start": None,
         "end": None},
    ]
    assert out["conditions"] == [
        {"condition_id": "c-1", "encounter_id": "enc-a", "system": "http://snomed.info/sct",
         "code": "44054006", "display": "Diabetes mellitus type 2", "onset": "2019-05-01"},
        {"condition_id": "00000000-0000-4000-8000-000000000005", "encounter_id": None,
         "system": None, "code": None, "display": None, "onset": "2018"},
    ]
    values = {o["observation_id"]: (o["value_num"], o["value_text"], o["unit"]) for o in
              out["observations"]}
    assert values == {"o-q": (6.3, None, "%"), "o-cc": (None, "Never smoker", None),
                      "o-cc-text": (None, "as text", None), "o-s": (None, "positive", None),
                      "o-t": (None, "true", None), "o-f": (None, "false", None),
                      "o-i": (7, None, None), "o-panel": (None, None, None)}
    first = out["observations"][0]
    assert first == {"observation_id": "o-q",
                     "encounter_id": "00000000-0000-4000-8000-000000000003",
                     "system": "http://loinc.org", "code": "4548-4", "value_num": 6.3,
                     "value_text": None, "unit": "%", "effective": "2020-01-01T10:05:00Z"}
    assert out["observations"][-1]["effective"] == "2020-01-01T10:00:00Z"
    assert out["observations"][-1]["encounter_id"] is None  # conditional: not resolved
    serialized = orjson.dumps(out).decode()
    for value in ("Canary", "Augusta", "Lovelace", "free text", "Practitioner", "ignored", "div"):
        assert value not in serialized
    assert out["person"] == {
        "tokens": tokenize(PersonAttributes("Augusta", "Lovelace", "1985-12-10", "female",
                                            "02139", "456-78-9012"), KEY.hasher),
        "key_id": "k1", "birth_year": 1985, "postal_code3": "021", "sex": "female"}


def test_references_resolve_to_the_named_encounters_own_id():
    # The Encounter's id differs from its fullUrl's uuid: references by either reach its id.
    bundle = small_bundle(
        {"resourceType": "Encounter", "id": "server-id-9"},
        {"resourceType": "Condition", "id": "c-urn",
         "encounter": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000002"}},
        {"resourceType": "Condition", "id": "c-rel",
         "encounter": {"reference": "Encounter/server-id-9"}},
        {"resourceType": "Condition", "id": "c-abs",
         "encounter": {"reference": "https://fhir.example.org/r4/Encounter/elsewhere/_history/3"}},
        {"resourceType": "Condition", "id": "c-contained", "encounter": {"reference": "#enc"}},
        {"resourceType": "Condition", "id": "c-identifier",
         "encounter": {"identifier": {"value": "v"}}},
        {"resourceType": "Observation", "id": "o-other", "encounter": {"reference": "Patient/p-1"}},
    )
    out = deidentify(bundle, KEY)
    assert [c["encounter_id"] for c in out["conditions"]] == [
        "server-id-9", "server-id-9", "elsewhere", None, None]
    assert out["observations"][0]["encounter_id"] is None


def test_resources_without_id_or_fullurl_get_a_record_scoped_id():
    bundle = small_bundle()
    bundle["id"] = "bundle-77"
    bundle["entry"] += [{"resource": {"resourceType": "Encounter"}},
                        {"resource": {"resourceType": "Observation", "valueString": "x"}},
                        {"resource": {"resourceType": "Condition", "id": ""}}]
    out = deidentify(bundle, KEY)
    assert out["encounters"][0]["encounter_id"] == "bundle-77/Encounter/1"
    assert out["observations"][0]["observation_id"] == "bundle-77/Observation/2"
    assert out["conditions"][0]["condition_id"] == "bundle-77/Condition/3"
    # Without a bundle id the record id is the Patient digest: no patient id in the output.
    del bundle["id"]
    direct = deidentify_fhir_bundle(bundle, KEY)
    assert direct["encounters"][0]["encounter_id"] == \
        f"{check_bundle(bundle).record_id}/Encounter/1"
    assert "p-1" not in orjson.dumps(direct).decode()


def test_only_the_official_name_and_the_ss_identifier_feed_the_tokens():
    bundle = small_bundle()
    patient = bundle["entry"][0]["resource"]
    patient["name"] = [{"use": "maiden", "family": "Byron", "given": ["Ada"]},
                       {"use": "official", "family": "Lovelace", "given": ["Augusta", "Ada"]}]
    patient["identifier"] = [
        {"type": {"coding": [{"code": "MR"}]}, "value": "MRN-0001"},
        {"type": {"coding": [{"code": "DL"}]}, "value": "S99938125"},
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                              "code": "SS"}]}, "value": "456789012"},
    ]
    expected = tokenize(PersonAttributes("Augusta", "Lovelace", "1985-12-10", "female", "02139",
                                         "456789012"), KEY.hasher)
    assert deidentify(bundle, KEY)["person"]["tokens"] == expected

    patient["name"] = [{"use": "maiden", "family": "Byron", "given": ["Ada"]}]
    patient["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "456789012"}]
    tokens = deidentify(bundle, KEY)["person"]["tokens"]
    assert tokens["T4"] == expected["T4"] != BLANK_TOKEN  # SSN found by its system
    assert tokens["T1"] == tokens["T2"] == tokens["T3"] == tokens["T5"] == BLANK_TOKEN  # no maiden


@pytest.mark.parametrize("patch", [
    {"name": "Augusta Lovelace"},
    {"name": [{"use": "official", "family": ["Lovelace"], "given": "Augusta"}]},
    {"name": [None, 5, {"use": "official", "given": [None]}]},
    {"birthDate": 19851210, "gender": True},
    {"birthDate": "10 Dec 1985", "gender": "unknown"},
    {"address": {"postalCode": "02139"}},
    {"address": [None]},
    {"address": [{"postalCode": 2139}]},
    {"identifier": "456-78-9012"},
    {"identifier": [None, {"type": "SS", "value": 456789012}, {"type": {"coding": "SS"}}]},
    {"name": [{"use": "official", "family": "L" * 100_000, "given": ["A" * 100_000]}]},
    {"resourceType": "Patient"},  # everything else gone
])
def test_malformed_patient_attributes_give_blank_tokens_not_exceptions(patch):
    bundle = small_bundle()
    entry = bundle["entry"][0]
    if list(patch) == ["resourceType"]:
        entry["resource"] = {"resourceType": "Patient"}
    else:
        entry["resource"].update(patch)
    out = deidentify(bundle, KEY)
    DeidentifiedFhirBundle.model_validate(out)
    assert BLANK_TOKEN in out["person"]["tokens"].values()
    assert "Lovelace" not in orjson.dumps(out).decode()


def test_malformed_clinical_resources_give_nulls_not_exceptions():
    bundle = small_bundle(
        {"resourceType": "Encounter", "id": 5, "class": "AMB", "period": "2020"},
        {"resourceType": "Encounter", "id": "e", "class": [{"coding": [{"code": "IMP"}]}]},
        {"resourceType": "Condition", "id": "c", "code": {"coding": "x"},
         "encounter": "Encounter/e",
         "onsetDateTime": 2020},
        {"resourceType": "Observation", "id": "o", "code": {"coding": [None]},
         "valueQuantity": {"value": "6.3", "unit": 5}, "effectiveDateTime": ["x"],
         "encounter": {"reference": 7}},
        {"resourceType": "Observation", "id": "o2", "valueQuantity": {"value": True}},
        {"resourceType": "Observation", "id": "o3", "valueBoolean": "yes"},
    )
    out = deidentify(bundle, KEY)
    DeidentifiedFhirBundle.model_validate(out)
    assert out["encounters"] == [
        {"encounter_id": "00000000-0000-4000-8000-000000000002", "class": None, "start": None,
         "end": None},
        {"encounter_id": "e", "class": "IMP", "start": None, "end": None}]
    assert out["conditions"][0] | {"condition_id": None} == {
        "condition_id": None, "encounter_id": None, "system": None, "code": None,
        "display": None, "onset": None}
    assert [(o["value_num"], o["value_text"], o["unit"], o["effective"], o["encounter_id"])
            for o in out["observations"]] == [(None, None, None, None, None)] * 3


def test_deidentify_fhir_bundle_never_raises_on_shapeless_input():
    for document in ({}, {"entry": None}, {"entry": [None, 1, {"resource": []}]}, [], None):
        out = deidentify_fhir_bundle(document, KEY, record_id="r")
        assert out["encounters"] == out["conditions"] == out["observations"] == []
        assert set(out["person"]["tokens"].values()) == {BLANK_TOKEN}
