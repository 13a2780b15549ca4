"""The tokenizer service under uvicorn, reading raw objects from real SeaweedFS."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import make_settings
from exchange_core.object_store import open_object_store
from exchange_core.services.processes import free_port
from support.records import canary_record, v1_record
from support.servers import ServerThread
from support.vectors import EXPECTED_ROWS, vector_rows
from tokenizer.app import create_app
from tokenizer.keys import KeyRing
from tokenizer.opentoken import BLANK_TOKEN, PersonAttributes, TokenHasher, tokenize

pytestmark = pytest.mark.services

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTOR_SECRET = "HashingKey-for-tests-0001"
OTHER_SECRET = "rotated-secret-for-tests-0002"
SERVICE_TOKEN = "tokenizer-service-token-for-tests-0001"  # fixed: xdist workers must collect the same ids
TOKEN_RULES = ("T1", "T2", "T3", "T4", "T5")
PERSON_FIELDS = ("first_name", "last_name", "birth_date", "sex", "postal_code", "ssn")


def write_key_file(path: Path, active: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"active_key_id": active,
                               "keys": {"k1": VECTOR_SECRET, "k2": OTHER_SECRET}}))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)  # atomic, as a rotation should be done
    return path


@pytest.fixture(scope="module")
def tokenizer_settings(services, database_url, tmp_path_factory):
    key_file = write_key_file(tmp_path_factory.mktemp("tokenizer-keys") / "keys.json", "k1")
    return make_settings(services, database_url, tokenizer_service_token=SERVICE_TOKEN,
                         tokenizer_hmac_secret_file=key_file)


@pytest.fixture(scope="module")
def api(tokenizer_settings):
    with ServerThread(create_app(tokenizer_settings)) as server:
        yield server


@pytest.fixture(scope="module")
def store(tokenizer_settings):
    return open_object_store(tokenizer_settings)


def auth(token: str = SERVICE_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(api, path: str, body, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{api.base_url}{path}", json=body,
                      headers=auth() if headers is None else headers, timeout=60)


def put_raw(store, data: bytes) -> dict[str, str]:
    """Store bytes under a fresh raw key; return the reference the pipeline would send."""
    key = f"raw/2026/12/03/tokenizer-test/{uuid.uuid4()}.json"
    store.put_new(key, data, "application/json")
    return {"object_key": key, "sha256": hashlib.sha256(data).hexdigest()}


# -- POST /v1/tokens ---------------------------------------------------------------------------


def test_vectors_through_post_tokens_match_byte_for_byte(api):
    rows = vector_rows()
    persons = [{field: (row[field] or None) for field in PERSON_FIELDS} for row in rows]

    response = post(api, "/v1/tokens", {"persons": persons})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"key_id", "tokens"}
    assert body["key_id"] == "k1"
    assert len(body["tokens"]) == len(rows) == EXPECTED_ROWS
    for row, tokens in zip(rows, body["tokens"]):
        assert tokens == {rule: row[rule] for rule in TOKEN_RULES}, row["row_id"]


@pytest.mark.parametrize("authorization, expected", [
    (None, 401),
    ("Bearer exk_" + "a" * 40, 401),   # a partner-style API key
    ("Bearer dev", 401),
    ("Bearer", 401),
    ("Basic " + SERVICE_TOKEN, 401),
    ("Bearer " + SERVICE_TOKEN[:-1], 401),
    ("Bearer " + SERVICE_TOKEN, 200),
    ("bearer " + SERVICE_TOKEN, 200),  # the scheme is case-insensitive (RFC 9110)
])
def test_auth_matrix(api, authorization, expected):
    headers = {"Authorization": authorization} if authorization is not None else {}
    body = {"persons": [{"first_name": "Ada"}]}

    for path, payload in (("/v1/tokens", body),
                          ("/v1/deidentify", {"items": [{"object_key": "raw/x.json",
                                                         "sha256": "0" * 64}]})):
        response = post(api, path, payload, headers=headers)
        assert response.status_code == expected, (path, response.text)
        if expected == 401:
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert problem["status"] == 401 and problem["type"].endswith("/unauthorized")
            assert problem["correlation_id"] == response.headers["x-correlation-id"]


def test_a_real_partner_key_is_refused(api, partner):
    response = post(api, "/v1/tokens", {"persons": [{}]}, headers=auth(partner.api_key))
    assert response.status_code == 401


def test_dev_key_is_refused_even_in_local(tokenizer_settings, services, database_url):
    local = make_settings(services, database_url, exchange_env="local",
                          tokenizer_hmac_secret_file=tokenizer_settings.tokenizer_hmac_secret_file)
    with ServerThread(create_app(local)) as server:
        response = post(server, "/v1/tokens", {"persons": [{}]}, headers=auth("dev"))
        assert response.status_code == 401
        assert post(server, "/v1/tokens", {"persons": [{}]},
                    headers=auth("local-dev-token")).status_code == 200


def test_health_and_metrics_need_no_credentials(api):
    assert httpx.get(f"{api.base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{api.base_url}/readyz").status_code == 200
    assert httpx.get(f"{api.base_url}/metrics").status_code == 200


@pytest.mark.parametrize("body, status", [
    ({"persons": []}, 422),
    ({"persons": [{}] * 10_001}, 422),
    ({"persons": [{"dob": "1985-12-10"}]}, 422),  # unknown field: no silent blank tokens
    ({"persons": [{"first_name": 5}]}, 422),
    ({"people": [{}]}, 422),
])
def test_invalid_token_requests_are_problems_without_values(api, body, status):
    response = post(api, "/v1/tokens", body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "1985-12-10" not in response.text


def test_malformed_json_and_wrong_content_type(api):
    url = f"{api.base_url}/v1/tokens"
    malformed = httpx.post(url, content=b'{"persons": [', timeout=30,
                           headers={**auth(), "Content-Type": "application/json"})
    assert malformed.status_code == 400
    wrong_type = httpx.post(url, content=b"persons", timeout=30,
                            headers={**auth(), "Content-Type": "text/plain"})
    assert wrong_type.status_code == 415


# -- POST /v1/deidentify -----------------------------------------------------------------------


def test_deidentify_batch_reports_each_fault_per_item(api, store):
    good_record = v1_record()
    ok = put_raw(store, json.dumps(good_record).encode())
    mismatch = {**put_raw(store, json.dumps(v1_record()).encode()), "sha256": "ab" * 32}
    missing = {"object_key": f"raw/2026/12/03/tokenizer-test/{uuid.uuid4()}.json",
               "sha256": "cd" * 32}
    unparseable = put_raw(store, b'{"record_id": "r-1", "patient": ')
    invalid_record = v1_record()
    del invalid_record["patient"]["birth_date"]
    invalid = put_raw(store, json.dumps(invalid_record).encode())
    bundle = put_raw(store, json.dumps({"resourceType": "Bundle", "type": "collection",
                                        "entry": []}).encode())
    items = [ok, mismatch, missing, unparseable, invalid, bundle,
             {**ok, "sha256": ok["sha256"].upper()}]

    response = post(api, "/v1/deidentify", {"items": items})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"key_id", "results"} and body["key_id"] == "k1"
    results = body["results"]
    assert [r["object_key"] for r in results] == [item["object_key"] for item in items]
    assert [r["status"] for r in results] == ["ok", "error", "error", "error", "error", "error", "ok"]
    assert [r.get("reason_code") for r in results[1:6]] == [
        "hash_mismatch", "object_not_found", "unparseable_payload", "invalid_payload",
        "invalid_payload"]
    assert all(r["detail"] for r in results[1:6])
    assert "$.patient.birth_date" in results[4]["detail"]

    record = results[0]["record"]
    patient = good_record["patient"]
    expected_tokens = tokenize(
        PersonAttributes(*(patient.get(f) for f in PERSON_FIELDS)), TokenHasher(VECTOR_SECRET))
    assert record["person"] == {"tokens": expected_tokens, "key_id": "k1", "birth_year": 1985,
                                "postal_code3": "021", "sex": "female"}
    assert record["encounters"][0]["encounter_id"] == good_record["encounter"]["encounter_id"]
    assert results[6]["record"] == record


def test_a_stored_object_with_nul_characters_is_a_permanent_per_item_error(api, store):
    """Objects accepted before the API refused U+0000 (or written by other means): the tokenizer
    reports invalid_payload, so the pipeline dead-letters them instead of failing on insert."""
    record = v1_record()
    record["encounter"]["diagnoses"][0]["display"] = "Zqnul\u0000canary"
    nul = put_raw(store, json.dumps(record).encode())
    ok = put_raw(store, json.dumps(v1_record()).encode())

    response = post(api, "/v1/deidentify", {"items": [nul, ok]})

    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert (first["status"], first["reason_code"]) == ("error", "invalid_payload")
    assert "$.encounter.diagnoses[0].display" in first["detail"] and "canary" not in response.text
    assert second["status"] == "ok"


@pytest.mark.parametrize("items", [
    [],
    [{"object_key": "raw/a.json", "sha256": "0" * 63}],
    [{"object_key": "other/a.json", "sha256": "0" * 64}],
    [{"object_key": "raw/../secrets.json", "sha256": "0" * 64}],
    [{"object_key": "raw/a.json", "sha256": "0" * 64}] * 1001,
])
def test_invalid_deidentify_requests_are_422(api, items):
    response = post(api, "/v1/deidentify", {"items": items})
    assert response.status_code == 422
    assert response.json()["errors"]


def test_unavailable_object_store_is_503_with_retry_after(tokenizer_settings):
    down = tokenizer_settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})  # nothing listens
    with ServerThread(create_app(down)) as server:
        response = post(server, "/v1/deidentify", {"items": [
            {"object_key": f"raw/2026/12/03/t/{i}.json", "sha256": "0" * 64} for i in range(5)]})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["content-type"].startswith("application/problem+json")


# -- PII never leaves ------------------------------------------------------------------------


def test_pii_canary_appears_in_no_response_log_or_metric(api, store, captured_logs):
    record, canaries = canary_record()
    patient = record["patient"]
    pii = canaries + [patient["birth_date"], patient["postal_code"],
                      patient["ssn"].replace("-", "")]
    ok_ref = put_raw(store, json.dumps(record).encode())
    broken = dict(record, patient={**patient, "birth_date": patient["first_name"]})
    invalid_ref = put_raw(store, json.dumps(broken).encode())
    unparseable_ref = put_raw(store, json.dumps(record).encode()[:-3])

    responses = [
        post(api, "/v1/tokens", {"persons": [{f: patient.get(f) for f in PERSON_FIELDS}]}),
        post(api, "/v1/tokens", {"persons": [{"first_name": patient["first_name"],
                                              "mrn": patient["mrn"]}]}),  # 422
        post(api, "/v1/deidentify", {"items": [ok_ref, invalid_ref, unparseable_ref]}),
        post(api, "/v1/deidentify", {"items": [{"object_key": "raw/" + patient["last_name"],
                                                "sha256": patient["first_name"]}]}),  # 422
    ]
    metrics = httpx.get(f"{api.base_url}/metrics").text
    logs = captured_logs.getvalue()

    assert [r.status_code for r in responses] == [200, 422, 200, 422]
    assert [r["status"] for r in responses[2].json()["results"]] == ["ok", "error", "error"]
    assert "tokenizer_requests_total" in metrics and "tokenizer_deidentify_results_total" in metrics
    assert '"msg": "batch de-identified"' in logs.replace('":"', '": "')
    for value in pii:
        for response in responses:
            assert value not in response.text
        assert value not in logs
        assert value not in metrics


# -- key rotation --------------------------------------------------------------------------


def test_rotating_the_active_key_changes_the_next_response_without_restart(
    services, database_url, tmp_path, store,
):
    key_file = write_key_file(tmp_path / "keys.json", "k1")
    settings = make_settings(services, database_url, tokenizer_service_token=SERVICE_TOKEN,
                             tokenizer_hmac_secret_file=key_file)
    person = {"first_name": "Ada", "last_name": "Lovelace", "birth_date": "1985-12-10",
              "sex": "female", "postal_code": "02139", "ssn": "456-78-9012"}
    ref = put_raw(store, json.dumps(v1_record(**person)).encode())
    with ServerThread(create_app(settings)) as server:
        before = post(server, "/v1/tokens", {"persons": [person]}).json()
        deid_before = post(server, "/v1/deidentify", {"items": [ref]}).json()

        write_key_file(key_file, "k2")
        time.sleep(1.1)  # the ring looks at the file at most once per second

        after = post(server, "/v1/tokens", {"persons": [person]}).json()
        deid_after = post(server, "/v1/deidentify", {"items": [ref]}).json()

    assert (before["key_id"], after["key_id"]) == ("k1", "k2")
    assert (deid_before["key_id"], deid_after["key_id"]) == ("k1", "k2")
    t_before, t_after = before["tokens"][0], after["tokens"][0]
    assert all(t_before[r] != t_after[r] for r in TOKEN_RULES)
    assert t_after == tokenize(PersonAttributes(**person), TokenHasher(OTHER_SECRET))
    person_after = deid_after["results"][0]["record"]["person"]
    assert person_after["key_id"] == "k2" and person_after["tokens"] == t_after
    assert deid_before["results"][0]["record"]["person"]["tokens"] == t_before
    assert BLANK_TOKEN not in t_after.values()


def test_a_key_ring_can_be_injected(tokenizer_settings, tmp_path):
    key_file = write_key_file(tmp_path / "keys.json", "k2")
    with ServerThread(create_app(tokenizer_settings, key_ring=KeyRing(key_file))) as server:
        assert post(server, "/v1/tokens", {"persons": [{}]}).json()["key_id"] == "k2"
