"""POST /v1/deidentify with FHIR R4 bundles: the tokenizer under uvicorn, objects in SeaweedFS."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import uuid
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import httpx
import orjson
import pytest

from conftest import make_settings
from exchange_assets.lib import canonical
from exchange_core.object_store import open_object_store
from support.records import v1_record
from support.servers import ServerThread
from support.vectors import VECTORS
from tokenizer.app import create_app
from tokenizer.models import DeidentifiedFhirBundle, DeidentifyResponse

pytestmark = pytest.mark.services

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "tests" / "data" / "fhir"
PATIENT_BUNDLES = sorted(p for p in SAMPLES.glob("*/*.json") if "Information" not in p.name)
REFERENCE_DATA_BUNDLE = SAMPLES / "NimbusInformatics__bdcat-fhir-azure-prototype" / \
    "hospitalInformation1603148702656.json"
VECTOR_SECRET = "HashingKey-for-tests-0001"
SERVICE_TOKEN = "tokenizer-service-token-for-tests-0001"
TOKEN_RULES = ("T1", "T2", "T3", "T4", "T5")
CLINICAL = {"Encounter": "encounters", "Condition": "conditions", "Observation": "observations"}


@pytest.fixture(scope="module")
def tokenizer_settings(services, database_url, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("tokenizer-fhir-keys") / "keys.json"
    key_file.write_text(json.dumps({"active_key_id": "k1", "keys": {"k1": VECTOR_SECRET}}))
    os.chmod(key_file, 0o600)
    return make_settings(services, database_url, tokenizer_service_token=SERVICE_TOKEN,
                         tokenizer_hmac_secret_file=key_file)


@pytest.fixture(scope="module")
def api(tokenizer_settings):
    with ServerThread(create_app(tokenizer_settings)) as server:
        yield server


@pytest.fixture(scope="module")
def store(tokenizer_settings):
    return open_object_store(tokenizer_settings)


def put_raw(store, data: bytes, sha256: str | None = None) -> dict[str, str]:
    key = f"raw/2026/12/03/tokenizer-fhir-test/{uuid.uuid4()}.json"
    store.put_new(key, data, "application/json")
    return {"object_key": key, "sha256": sha256 or hashlib.sha256(data).hexdigest()}


def deidentify(api, items: list[dict[str, str]]) -> httpx.Response:
    return httpx.post(f"{api.base_url}/v1/deidentify", json={"items": items},
                      headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=120)


def vector_tokens() -> dict[str, dict[str, str]]:
    with open(VECTORS, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["variant"] == "fhir-as-is"]
    return {r["origin"].split(":", 2)[2]: {rule: r[rule] for rule in TOKEN_RULES} for r in rows}


def patient_pii(bundle: dict) -> set[str]:
    """The Patient's names, identifiers (SSN too), phone, address line/city/ZIP (>= 5 chars)."""
    patient = next(e["resource"] for e in bundle["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    values = [patient["id"]]
    for name in patient.get("name", []):
        values += name.get("given", []) + [name.get("family", "")]
    for address in patient.get("address", []):
        values += address.get("line", []) + [address.get("city", ""), address.get("postalCode", "")]
    values += [t.get("value", "") for t in patient.get("telecom", [])]
    values += [i.get("value", "") for i in patient.get("identifier", [])]
    return {v for v in values if len(v) >= 5}


def test_sample_bundles_in_one_batch(api, store, captured_logs):
    raws = [path.read_bytes() for path in PATIENT_BUNDLES]
    bundle_refs = [put_raw(store, raw) for raw in raws]
    reference_data = put_raw(store, REFERENCE_DATA_BUNDLE.read_bytes())
    # Tampered: the stored bytes differ (one digit of the SSN) from what was fingerprinted.
    tampered_bytes = raws[0].replace(b'"999-', b'"998-', 1)
    assert tampered_bytes != raws[0]
    tampered = put_raw(store, tampered_bytes, sha256=bundle_refs[0]["sha256"])
    v1 = put_raw(store, json.dumps(v1_record()).encode())
    items = [*bundle_refs, reference_data, tampered, v1]

    response = deidentify(api, items)

    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    DeidentifyResponse.model_validate(body)
    assert body["key_id"] == "k1"
    results = body["results"]
    assert [r["object_key"] for r in results] == [item["object_key"] for item in items]
    assert [r["status"] for r in results] == ["ok"] * 6 + ["error", "error", "ok"]
    assert results[6]["reason_code"] == "invalid_payload"
    assert "exactly-one-patient" in results[6]["detail"]
    assert results[7]["reason_code"] == "hash_mismatch"
    assert results[8]["record"]["source_format"] == "record.v1"

    vectors = vector_tokens()
    for path, raw, result in zip(PATIENT_BUNDLES, raws, results):
        bundle = orjson.loads(raw)
        record = result["record"]
        DeidentifiedFhirBundle.model_validate(record)
        assert (record["schema_version"], record["source_format"]) == (2, "fhir-r4-bundle")
        counts = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
        for resource_type, key in CLINICAL.items():
            assert len(record[key]) == counts[resource_type] > 0, (path.name, resource_type)
        assert record["person"]["key_id"] == "k1"
        if path.name in vectors:
            assert record["person"]["tokens"] == vectors[path.name], path.name
    if vectors:
        assert all(path.name in vectors for path in PATIENT_BUNDLES)

    logs = captured_logs.getvalue()
    for raw in raws:
        for value in patient_pii(orjson.loads(raw)):
            assert value not in response.text
            assert value not in logs


def test_a_bundle_that_fails_the_ingest_rules_is_invalid_payload_without_values(api, store):
    bundle = orjson.loads(PATIENT_BUNDLES[0].read_bytes())
    bundle["type"] = "searchset"
    patient = next(e["resource"] for e in bundle["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    bundle["entry"].append({"resource": dict(patient)})  # a second Patient
    ref = put_raw(store, orjson.dumps(bundle))

    response = deidentify(api, [ref])

    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert (result["status"], result["reason_code"]) == ("error", "invalid_payload")
    assert "(bundle-type)" in result["detail"] and "(exactly-one-patient)" in result["detail"]
    for value in patient_pii(bundle) | {"searchset"}:
        assert value not in response.text


def test_deidentified_bundles_publish_one_canonical_row_per_resource(api, store, db):
    """The consumer end: the records as returned, through the canonical v2 publish (real SQL)."""
    raws = [path.read_bytes() for path in PATIENT_BUNDLES]
    refs = [put_raw(store, raw) for raw in raws]
    response = deidentify(api, refs)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["ok"] * len(raws)

    day = date(2031, 1, 17)  # a partition no other test of this database uses
    partner_id = f"partner-fhir-{uuid.uuid4().hex[:8]}"
    received_at = datetime(2031, 1, 17, 12, tzinfo=timezone.utc)
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO exchange.tokenized_records (event_id, partner_id, record_id, object_key, "
            "sha256, correlation_id, payload_version, received_at, partition_date, token_key_id, "
            "deidentified) VALUES (%s, %s, %s, %s, %s, %s, 2, %s, %s, 'k1', %s)",
            [(uuid.uuid4(), partner_id, f"record-{index}", ref["object_key"], ref["sha256"],
              "corr", received_at, day, orjson.dumps(result["record"]).decode())
             for index, (ref, result) in enumerate(zip(refs, results))])

    published = canonical.publish_day(db, day, full=False)

    expected = Counter()
    for raw in raws:
        expected.update(e["resource"]["resourceType"] for e in orjson.loads(raw)["entry"])
    assert published.records == published.persons == len(raws)
    counts = canonical.table_counts(db, [day])
    assert counts == {"persons": len(raws), "encounters": expected["Encounter"],
                      "conditions": expected["Condition"], "observations": expected["Observation"]}
    assert canonical.persons_without_tokens(db, [day]) == 0
    orphans = db.execute(
        "SELECT count(*) FROM canonical.observations o WHERE o.partition_date = %s AND NOT EXISTS "
        "(SELECT 1 FROM canonical.encounters e WHERE e.partner_id = o.partner_id "
        "AND e.encounter_id = o.encounter_id)", (day,)).fetchone()[0]
    assert orphans == 0
