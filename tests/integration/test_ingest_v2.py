"""POST /v2/ingest (FHIR R4 bundles) against real Postgres and real SeaweedFS.

The bundles are the licensed Synthea sample set in tests/data/fhir/ (see ATTRIBUTION.md); the
invalid variants are derived from them in memory, never by editing the files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator

from exchange_core.object_store import S3ObjectStore, open_object_store
from ingest_api.app import create_app
from ingest_api.fhir_validation import patient_record_id
from ingest_api.payload_validation import load_contract
from support.records import v1_record
from support.servers import ServerThread

pytestmark = pytest.mark.services

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "fhir"
REFERENCE_DATA_PREFIXES = ("hospitalInformation", "practitionerInformation")
PATIENT_FILES = sorted(p for p in SAMPLES.glob("*/*.json") if not p.name.startswith(REFERENCE_DATA_PREFIXES))
REFERENCE_DATA_FILES = sorted(p for p in SAMPLES.glob("*/*.json") if p.name.startswith(REFERENCE_DATA_PREFIXES))
EVENT_V1 = Draft202012Validator(load_contract("events/record.ingested.v1.schema.json"),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)
EVENT_V2 = Draft202012Validator(load_contract("events/record.ingested.v2.schema.json"),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def api(settings):
    with ServerThread(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="module")
def store(settings) -> S3ObjectStore:
    return open_object_store(settings)


def post_v2(api, partner, body: bytes, *, key: str | None = None,
            content_type: str = "application/fhir+json", headers: dict | None = None) -> httpx.Response:
    all_headers = {"Authorization": f"Bearer {partner.api_key}", "Content-Type": content_type,
                   "Idempotency-Key": key or str(uuid.uuid4())}
    all_headers.update(headers or {})
    return httpx.post(f"{api.base_url}/v2/ingest", content=body, headers=all_headers, timeout=120)


def partner_counts(db, partner_id: str) -> dict[str, int]:
    return {
        table: db.execute(f"SELECT count(*) FROM ingest.{table} WHERE {column} = %s", (value,)).fetchone()[0]
        for table, column, value in (
            ("ingested_records", "partner_id", partner_id),
            ("idempotency_keys", "partner_id", partner_id),
            ("audit_log", "partner_id", partner_id),
            ("outbox_events", "payload->>'partner_id'", partner_id),
        )
    }


NOTHING = {"ingested_records": 0, "idempotency_keys": 0, "audit_log": 0, "outbox_events": 0}
ONE_EACH = {"ingested_records": 1, "idempotency_keys": 1, "audit_log": 1, "outbox_events": 1}


def partner_objects(store, partner_id: str) -> list[str]:
    return [obj.key for obj in store.list("raw/") if f"/{partner_id}/" in obj.key]


def patient_entry(document: dict) -> dict:
    return next(e for e in document["entry"] if e["resource"]["resourceType"] == "Patient")


def patient_pii(document: dict) -> list[str]:
    """The Patient's names, address lines, phone numbers and SSN identifier values."""
    patient = patient_entry(document)["resource"]
    values: set[str] = set()
    for name in patient.get("name", []):
        values.update(name.get("given", []))
        values.update([name["family"]] if "family" in name else [])
    for address in patient.get("address", []):
        values.update(address.get("line", []))
    values.update(t["value"] for t in patient.get("telecom", []) if t.get("system") == "phone")
    values.update(i["value"] for i in patient.get("identifier", [])
                  if i.get("system") == "http://hl7.org/fhir/sid/us-ssn")
    assert len(values) >= 4, "expected names, an address line, a phone and an SSN"
    return sorted(values)


def assert_no_pii(text: str, pii: list[str], where: str) -> None:
    for value in pii:
        for form in (value, json.dumps(value)[1:-1]):  # as is, and JSON-escaped (é → \u00e9)
            assert form not in text, f"PII value leaked into {where}"


def outbox_rows(db, partner_id: str) -> list[tuple]:
    return db.execute("SELECT topic, message_key, payload FROM ingest.outbox_events "
                      "WHERE payload->>'partner_id' = %s ORDER BY id", (partner_id,)).fetchall()


# --- derived variants (in memory) ---------------------------------------------------------------

def two_patients(document: dict) -> dict:
    doc = copy.deepcopy(document)
    twin = copy.deepcopy(patient_entry(doc))
    new_id = str(uuid.uuid4())
    twin["fullUrl"] = f"urn:uuid:{new_id}"
    twin["resource"]["id"] = new_id
    doc["entry"].append(twin)
    return doc


def dangling_reference(document: dict) -> tuple[dict, str]:
    doc = copy.deepcopy(document)
    index, encounter = next((i, e) for i, e in enumerate(doc["entry"])
                            if e["resource"]["resourceType"] == "Encounter")
    encounter["resource"]["subject"] = {"reference": f"urn:uuid:{uuid.uuid4()}"}
    return doc, f"$.entry[{index}].resource.subject.reference"


def with_conditional_references(document: dict) -> dict:
    """Like current Synthea output: Practitioner/Organization/Location referenced conditionally,
    not shipped in the bundle (the reference data lives on the FHIR server)."""
    doc = copy.deepcopy(document)
    replaced: dict[str, str] = {}
    kept = []
    for entry in doc["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Practitioner":
            replaced[entry["fullUrl"]] = "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999912345"
        elif resource["resourceType"] == "Organization":
            replaced[entry["fullUrl"]] = ("Organization?identifier=https://github.com/synthetichealth/synthea|"
                                          + resource.get("id", "org"))
        else:
            kept.append(entry)
    assert replaced, "the sample should ship a Practitioner or an Organization"
    doc["entry"] = kept
    stack: list = [e["resource"] for e in kept]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("reference") in replaced:
                node["reference"] = replaced[node["reference"]]
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(node)
    for entry in kept:
        if entry["resource"]["resourceType"] == "Encounter":
            entry["resource"]["location"] = [{"location": {
                "reference": "Location?identifier=https://github.com/synthetichealth/synthea|loc-1",
                "display": "CLINIC"}}]
            entry["resource"].setdefault("basedOn", []).append({"reference": "ServiceRequest/123"})
    return doc


def all_references(document: dict) -> list[str]:
    found, stack = [], [e["resource"] for e in document["entry"]]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                found.append(node["reference"])
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(node)
    return found


# --- tests ----------------------------------------------------------------------------------------

def test_sample_set_is_present():
    assert len(PATIENT_FILES) >= 6 and REFERENCE_DATA_FILES
    assert any(not p.name.isascii() for p in PATIENT_FILES)


@pytest.mark.parametrize("path", PATIENT_FILES, ids=lambda p: p.stem[:28])
def test_every_sample_bundle_is_ingested(api, partner, db, store, path):
    raw = path.read_bytes()
    document = orjson.loads(raw)
    content_type = "application/json" if document["type"] == "batch" else "application/fhir+json"
    response = post_v2(api, partner, raw, content_type=f"{content_type}; charset=utf-8",
                       headers={"X-Correlation-ID": "corr-v2-sample"})

    assert response.status_code == 202, response.text
    body = response.json()
    expected_record_id = patient_record_id(patient_entry(document)["resource"]["id"])
    assert body["record_id"] == expected_record_id
    assert body["schema_version"] == 2 and body["status"] == "accepted"
    assert body["sha256"] == hashlib.sha256(raw).hexdigest()
    assert body["correlation_id"] == "corr-v2-sample"
    assert store.get(body["object_key"]) == raw  # byte for byte, not a re-serialization

    ledger = db.execute(
        "SELECT record_id, schema_version, object_key, sha256, size_bytes, content_type, event_id::text "
        "FROM ingest.ingested_records WHERE partner_id = %s", (partner.partner_id,)).fetchall()
    assert ledger == [(expected_record_id, 2, body["object_key"], body["sha256"], len(raw), content_type,
                       body["event_id"])]
    [(topic, message_key, event)] = outbox_rows(db, partner.partner_id)
    assert topic == "record.ingested.v2"
    assert message_key == f"{partner.partner_id}:{expected_record_id}"
    assert list(EVENT_V2.iter_errors(event)) == []
    assert event["payload_format"] == "fhir-r4-bundle" and event["schema_version"] == 2
    assert event["event_id"] == body["event_id"] and event["size_bytes"] == len(raw)
    assert event["content_type"] == content_type and event["correlation_id"] == "corr-v2-sample"
    assert partner_counts(db, partner.partner_id) == ONE_EACH


def _invalid_cases() -> list[tuple[str, bytes, str, int, tuple[str, str] | None]]:
    """(name, body, content type, expected status, an expected (path, rule) or None)."""
    source = orjson.loads(PATIENT_FILES[0].read_bytes())
    dangling, dangling_path = dangling_reference(source)
    bare_patient = patient_entry(source)["resource"]
    wrong_type = dict(source, type="searchset")
    raw = PATIENT_FILES[0].read_bytes()
    return [
        ("no-patient", REFERENCE_DATA_FILES[0].read_bytes(), "application/fhir+json", 422,
         ("$.entry", "exactly-one-patient")),
        ("two-patients", orjson.dumps(two_patients(source)), "application/fhir+json", 422,
         ("$.entry", "exactly-one-patient")),
        ("dangling-reference", orjson.dumps(dangling), "application/fhir+json", 422,
         (dangling_path, "reference-resolves")),
        ("wrong-resource-type", orjson.dumps(bare_patient), "application/fhir+json", 422,
         ("$.resourceType", "bundle-resource-type")),
        ("not-json", raw[: len(raw) // 2], "application/fhir+json", 400, None),
        ("wrong-bundle-type", orjson.dumps(wrong_type), "application/json", 422, ("$.type", "bundle-type")),
        ("not-json-content-type", raw, "text/plain", 415, None),
        ("nul-character", orjson.dumps(dict(source, id="bundle-\x00-id")), "application/fhir+json", 422,
         ("$.id", "no-nul-character")),
    ]


def test_invalid_bundles_are_refused_with_a_clear_problem_and_store_nothing(api, partner, db, store):
    pii = patient_pii(orjson.loads(PATIENT_FILES[0].read_bytes()))
    for name, body, content_type, expected, violation in _invalid_cases():
        response = post_v2(api, partner, body, content_type=content_type)
        assert response.status_code == expected, (name, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), name
        problem = response.json()
        assert problem["status"] == expected and problem["detail"], name
        assert problem["correlation_id"] == response.headers["x-correlation-id"]
        assert_no_pii(response.text, pii, f"the {name} problem body")
        if violation is not None:
            assert problem["type"].endswith("/schema-violation"), name
            assert violation in {(e["path"], e["rule"]) for e in problem["errors"]}, (name, problem)
            assert all(e["message"] for e in problem["errors"])
        if name == "no-patient":
            assert "reference-data bundles" in problem["detail"] and "not accepted" in problem["detail"]
        if name == "two-patients":
            assert "2 Patient entries" in problem["detail"]
        if name == "not-json":
            assert problem["type"].endswith("/malformed-json")
    assert partner_counts(db, partner.partner_id) == NOTHING
    assert partner_objects(store, partner.partner_id) == []


def test_bundle_with_conditional_contained_and_relative_references_is_accepted(api, partner, db, store):
    document = with_conditional_references(orjson.loads(PATIENT_FILES[0].read_bytes()))
    references = all_references(document)
    for prefix in ("Practitioner?", "Organization?", "Location?", "#", "ServiceRequest/"):
        assert any(r.startswith(prefix) for r in references), prefix
    raw = json.dumps(document, ensure_ascii=False, indent=1).encode()

    response = post_v2(api, partner, raw)

    assert response.status_code == 202, response.text
    assert store.get(response.json()["object_key"]) == raw
    assert partner_counts(db, partner.partner_id) == ONE_EACH


def test_idempotent_replay_and_conflicts_work_for_v2(api, partner, db, store):
    raw = PATIENT_FILES[1].read_bytes()
    first = post_v2(api, partner, raw, key="v2-replay-key")
    reserialized = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)  # same document, other bytes
    second = post_v2(api, partner, reserialized, key="v2-replay-key", content_type="application/json")
    third = post_v2(api, partner, raw, key="v2-replay-key")

    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    for replay in (second, third):
        assert replay.status_code == 202
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == first.json()
    assert store.get(first.json()["object_key"]) == raw

    other_bundle = post_v2(api, partner, PATIENT_FILES[2].read_bytes(), key="v2-replay-key")
    assert other_bundle.status_code == 409 and other_bundle.json()["type"].endswith("idempotency-key-reused")
    same_key_on_v1 = httpx.post(f"{api.base_url}/v1/ingest", content=json.dumps(v1_record()),
                                headers={"Authorization": f"Bearer {partner.api_key}",
                                         "Content-Type": "application/json",
                                         "Idempotency-Key": "v2-replay-key"})
    assert same_key_on_v1.status_code == 409
    assert partner_counts(db, partner.partner_id) == ONE_EACH
    assert partner_objects(store, partner.partner_id) == [first.json()["object_key"]]


def test_v1_still_works_unchanged(api, partner, db, store):
    record = v1_record()
    raw = json.dumps(record).encode()
    response = httpx.post(f"{api.base_url}/v1/ingest", content=raw,
                          headers={"Authorization": f"Bearer {partner.api_key}",
                                   "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
    assert response.status_code == 202, response.text
    assert response.json()["schema_version"] == 1
    assert store.get(response.json()["object_key"]) == raw
    [(topic, _, event)] = outbox_rows(db, partner.partner_id)
    assert topic == "record.ingested.v1"
    assert list(EVENT_V1.iter_errors(event)) == []
    assert "payload_format" not in event
    assert db.execute("SELECT schema_version FROM ingest.ingested_records WHERE partner_id = %s",
                      (partner.partner_id,)).fetchone()[0] == 1
    # v1 still refuses FHIR bundles (its own schema, its own 1 MiB limit).
    bundle = PATIENT_FILES[0].read_bytes()
    refused = httpx.post(f"{api.base_url}/v1/ingest", content=bundle,
                         headers={"Authorization": f"Bearer {partner.api_key}",
                                  "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
    assert refused.status_code in (413, 422)


def _big_bundle(target_bytes: int) -> bytes:
    """A structurally valid bundle of about `target_bytes`: one Patient and many Observations."""
    patient_id = str(uuid.uuid4())
    entries = [{"fullUrl": f"urn:uuid:{patient_id}",
                "resource": {"resourceType": "Patient", "id": patient_id},
                "request": {"method": "POST", "url": "Patient"}}]
    note = "x" * 900
    template = {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                "subject": {"reference": f"urn:uuid:{patient_id}"}, "valueString": note}
    per_entry = len(orjson.dumps({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": template,
                                  "request": {"method": "POST", "url": "Observation"}})) + 1
    for _ in range(target_bytes // per_entry + 1):
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": template,
                        "request": {"method": "POST", "url": "Observation"}})
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def test_body_over_16_mib_is_413_and_stores_nothing(api, partner, db, store, settings):
    limit = settings.v2_max_body_bytes
    assert limit == 16 * 1024 * 1024
    too_big = _big_bundle(limit + 4096)
    assert len(too_big) > limit

    declared = post_v2(api, partner, too_big)
    assert declared.status_code == 413, declared.text
    assert declared.headers["content-type"].startswith("application/problem+json")

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for start in range(0, len(too_big), 1 << 20):
            yield too_big[start:start + (1 << 20)]

    streamed = httpx.post(f"{api.base_url}/v2/ingest", content=chunks(), timeout=120,
                          headers={"Authorization": f"Bearer {partner.api_key}",
                                   "Content-Type": "application/fhir+json",
                                   "Idempotency-Key": str(uuid.uuid4())})
    assert streamed.status_code == 413
    assert partner_counts(db, partner.partner_id) == NOTHING
    assert partner_objects(store, partner.partner_id) == []


def test_body_just_under_16_mib_is_accepted(api, partner, store, settings):
    raw = _big_bundle(settings.v2_max_body_bytes - 64 * 1024)
    assert 15 * 1024 * 1024 < len(raw) <= settings.v2_max_body_bytes
    response = post_v2(api, partner, raw)
    assert response.status_code == 202, response.text
    assert hashlib.sha256(store.get(response.json()["object_key"])).hexdigest() == response.json()["sha256"]


def test_pii_never_reaches_logs_events_or_problem_bodies(api, partner, db, captured_logs):
    responses: list[str] = []
    all_pii: list[str] = []
    for path in PATIENT_FILES:
        raw = path.read_bytes()
        document = orjson.loads(raw)
        all_pii += patient_pii(document)
        accepted = post_v2(api, partner, raw)
        assert accepted.status_code == 202, accepted.text
        dangling, _ = dangling_reference(document)
        for variant in (two_patients(document), dangling):
            refused = post_v2(api, partner, orjson.dumps(variant))
            assert refused.status_code == 422
            responses.append(refused.text)
        responses.append(accepted.text)
        status = httpx.get(f"{api.base_url}/v1/records/{accepted.json()['record_id']}",
                           headers={"Authorization": f"Bearer {partner.api_key}"})
        assert status.status_code == 200
        responses.append(status.text)

    logs = captured_logs.getvalue()
    assert '"msg":"request"' in logs.replace('": "', '":"')
    events = json.dumps([row[2] for row in outbox_rows(db, partner.partner_id)], ensure_ascii=False)
    audit = json.dumps([row[0] for row in db.execute(
        "SELECT details FROM ingest.audit_log WHERE partner_id = %s", (partner.partner_id,))],
        ensure_ascii=False)
    message_keys = " ".join(row[1] for row in outbox_rows(db, partner.partner_id))
    assert len(json.loads(events)) == len(PATIENT_FILES)
    assert_no_pii(logs, all_pii, "the logs")
    assert_no_pii(events + message_keys, all_pii, "the outbox events")
    assert_no_pii(audit, all_pii, "the audit log")
    assert_no_pii("\n".join(responses), all_pii, "the responses")
