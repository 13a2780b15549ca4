"""POST /v1/ingest and GET /v1/records against real Postgres and real SeaweedFS."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import httpx
import psycopg
import pytest

from conftest import make_settings
from exchange_core.gc_orphans import gc_orphans
from exchange_core.object_store import ObjectNotFound, S3ObjectStore, open_object_store
from ingest_api.app import create_app
from support.records import canary_record, v1_record
from support.servers import ServerThread

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def api(settings):
    with ServerThread(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="module")
def store(settings) -> S3ObjectStore:
    return open_object_store(settings)


def post(api, partner, record, *, key=None, body: bytes | None = None, headers=None):
    all_headers = {"Authorization": f"Bearer {partner.api_key}", "Content-Type": "application/json",
                   "Idempotency-Key": key or str(uuid.uuid4())}
    all_headers.update(headers or {})
    content = body if body is not None else json.dumps(record).encode()
    return httpx.post(f"{api.base_url}/v1/ingest", content=content, headers=all_headers, timeout=30)


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


def partner_objects(store, partner_id: str) -> list[str]:
    return [obj.key for obj in store.list("raw/") if f"/{partner_id}/" in obj.key]


def test_accepted_record_is_stored_raw_and_recorded_in_one_transaction(api, partner, db, store):
    record = v1_record()
    raw = json.dumps(record, indent=2).encode()
    response = post(api, partner, record, body=raw, headers={"X-Correlation-ID": "corr-abc-123"})

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["record_id"] == record["record_id"]
    assert body["schema_version"] == 1
    assert body["correlation_id"] == "corr-abc-123"
    assert response.headers["x-correlation-id"] == "corr-abc-123"
    assert body["sha256"] == hashlib.sha256(raw).hexdigest()
    assert body["object_key"].startswith("raw/") and f"/{partner.partner_id}/" in body["object_key"]
    assert store.get(body["object_key"]) == raw  # the exact bytes, not a re-serialization

    ledger = db.execute(
        "SELECT object_key, sha256, size_bytes, status, event_id::text, correlation_id "
        "FROM ingest.ingested_records WHERE partner_id = %s", (partner.partner_id,)
    ).fetchall()
    assert ledger == [(body["object_key"], body["sha256"], len(raw), "accepted", body["event_id"],
                       "corr-abc-123")]
    event = db.execute("SELECT payload FROM ingest.outbox_events WHERE event_id = %s",
                       (body["event_id"],)).fetchone()[0]
    assert event["object_key"] == body["object_key"] and event["correlation_id"] == "corr-abc-123"
    assert partner_counts(db, partner.partner_id) == {
        "ingested_records": 1, "idempotency_keys": 1, "audit_log": 1, "outbox_events": 1}


def test_same_key_same_body_replays_even_reserialized(api, partner, db):
    record = v1_record()
    first = post(api, partner, record, key="key-replay-1")
    # Same document: other key order and whitespace.
    reordered = json.dumps(dict(reversed(list(record.items()))), indent=4, sort_keys=False).encode()
    second = post(api, partner, record, key="key-replay-1", body=reordered)
    third = post(api, partner, record, key="key-replay-1")

    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    for replay in (second, third):
        assert replay.status_code == 202
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == first.json()
    assert partner_counts(db, partner.partner_id)["ingested_records"] == 1


def test_same_key_different_body_is_409_and_stores_nothing(api, partner, db, store):
    post(api, partner, v1_record(), key="key-conflict")
    before_rows, before_objects = partner_counts(db, partner.partner_id), partner_objects(store, partner.partner_id)

    response = post(api, partner, v1_record(), key="key-conflict")

    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 409 and problem["type"].endswith("idempotency-key-reused")
    assert problem["correlation_id"] == response.headers["x-correlation-id"]
    assert partner_counts(db, partner.partner_id) == before_rows
    assert partner_objects(store, partner.partner_id) == before_objects


@pytest.mark.parametrize("key_header", [None, "", "has space", "é-non-ascii", "x" * 256])
def test_missing_or_malformed_idempotency_key_is_400(api, partner, db, key_header):
    headers = {"Authorization": f"Bearer {partner.api_key}", "Content-Type": "application/json"}
    if key_header is not None:
        headers["Idempotency-Key"] = key_header
    response = httpx.post(f"{api.base_url}/v1/ingest", content=json.dumps(v1_record()).encode("utf-8"),
                          headers={k: v.encode("utf-8") if isinstance(v, str) else v for k, v in headers.items()})
    assert response.status_code == 400
    assert response.json()["type"].split("/")[-1] in ("idempotency-key-missing", "idempotency-key-invalid")
    assert partner_counts(db, partner.partner_id)["ingested_records"] == 0


def test_two_idempotency_key_headers_are_400(api, partner, db):
    headers = [("Authorization", f"Bearer {partner.api_key}"), ("Content-Type", "application/json"),
               ("Idempotency-Key", "key-one"), ("Idempotency-Key", "key-two")]
    response = httpx.post(f"{api.base_url}/v1/ingest", content=json.dumps(v1_record()).encode(), headers=headers)
    assert response.status_code == 400
    assert response.json()["type"].endswith("idempotency-key-invalid")
    assert partner_counts(db, partner.partner_id)["ingested_records"] == 0


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer exk_unknown_key", "Basic abc", "Bearer dev"])
def test_missing_unknown_or_dev_bearer_outside_local_is_401(api, authorization, db):
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    if authorization:
        headers["Authorization"] = authorization
    before = db.execute("SELECT count(*) FROM ingest.ingested_records").fetchone()[0]
    response = httpx.post(f"{api.base_url}/v1/ingest", content=json.dumps(v1_record()), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert db.execute("SELECT count(*) FROM ingest.ingested_records").fetchone()[0] == before


def test_dev_bearer_is_accepted_only_in_local(services, database_url, db):
    local = make_settings(services, database_url, exchange_env="local")
    with ServerThread(create_app(local)) as server:
        response = httpx.post(
            f"{server.base_url}/v1/ingest", content=json.dumps(v1_record()),
            headers={"Authorization": "Bearer dev", "Content-Type": "application/json",
                     "Idempotency-Key": str(uuid.uuid4())},
        )
    assert response.status_code == 202, response.text
    assert db.execute("SELECT count(*) FROM ingest.ingested_records WHERE partner_id = 'dev'").fetchone()[0] >= 1


def test_bad_bodies_are_refused_and_store_nothing(api, partner, db, store, settings):
    canary_value = "Zqsecretvalue" + uuid.uuid4().hex[:6]
    schema_invalid = v1_record(first_name=canary_value)
    del schema_invalid["patient"]["last_name"]
    schema_invalid["patient"]["birth_date"] = canary_value
    schema_invalid["encounter"]["observations"][0]["value"] = {"nested": canary_value}
    cases = [
        ("malformed", b'{"record_id": "x", ', "application/json", 400),
        ("schema", json.dumps(schema_invalid).encode(), "application/json", 422),
        ("too-large", b"{" + b" " * settings.v1_max_body_bytes + b"}", "application/json", 413),
        ("content-type", json.dumps(v1_record()).encode(), "text/plain", 415),
    ]
    for name, body, content_type, expected in cases:
        response = post(api, partner, None, body=body, headers={"Content-Type": content_type})
        assert response.status_code == expected, (name, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert canary_value not in response.text
        if name == "schema":
            paths = {(e["path"], e["rule"]) for e in response.json()["errors"]}
            assert ("$.patient.last_name", "required") in paths
            assert ("$.patient.birth_date", "pattern") in paths
            assert ("$.encounter.observations[0].value", "type") in paths
    assert partner_counts(db, partner.partner_id) == {
        "ingested_records": 0, "idempotency_keys": 0, "audit_log": 0, "outbox_events": 0}
    assert partner_objects(store, partner.partner_id) == []


def test_fifty_concurrent_requests_with_one_key_have_one_side_effect(api, partner, db, store):
    record = v1_record()
    raw = json.dumps(record).encode()

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            headers = {"Authorization": f"Bearer {partner.api_key}", "Content-Type": "application/json",
                       "Idempotency-Key": "one-key-for-fifty"}
            return await asyncio.gather(*[
                client.post(f"{api.base_url}/v1/ingest", content=raw, headers=headers) for _ in range(50)
            ])

    responses = asyncio.run(fire())
    accepted = [r for r in responses if r.status_code == 202]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(accepted) + len(in_flight) == 50
    assert all(r.json()["type"].endswith("idempotency-key-in-flight") for r in in_flight)
    assert len({json.dumps(r.json(), sort_keys=True) for r in accepted}) == 1
    assert sum(1 for r in accepted if "idempotent-replayed" not in r.headers) == 1
    counts = partner_counts(db, partner.partner_id)
    assert counts["ingested_records"] == 1 and counts["outbox_events"] == 1
    referenced = db.execute("SELECT object_key FROM ingest.ingested_records WHERE partner_id = %s",
                            (partner.partner_id,)).fetchone()[0]
    assert referenced in partner_objects(store, partner.partner_id)


def test_same_key_used_by_two_partners_gives_two_records(api, database_url, db):
    from ingest_api.partners import create_partner

    with psycopg.connect(database_url) as conn:
        first = create_partner(conn, f"p-{uuid.uuid4().hex[:10]}")
        second = create_partner(conn, f"p-{uuid.uuid4().hex[:10]}")
    record = v1_record()
    a = post(api, first, record, key="shared-key")
    b = post(api, second, record, key="shared-key")
    assert a.status_code == b.status_code == 202
    assert "idempotent-replayed" not in b.headers
    assert a.json()["object_key"] != b.json()["object_key"]
    assert partner_counts(db, first.partner_id)["ingested_records"] == 1
    assert partner_counts(db, second.partner_id)["ingested_records"] == 1


def test_s3_unreachable_is_503_with_retry_after_and_no_rows(services, database_url, partner, db):
    from exchange_core.services.processes import free_port

    broken = make_settings(services, database_url, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    with ServerThread(create_app(broken)) as server:
        response = post(server, partner, v1_record())
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert partner_counts(db, partner.partner_id) == {
        "ingested_records": 0, "idempotency_keys": 0, "audit_log": 0, "outbox_events": 0}


class _DatabaseFailsAfterWrite:
    """A real S3 store that, right after the raw write, makes the database refuse this app's
    connections: the failure the design's crash analysis calls 'after the object, before commit'."""

    def __init__(self, inner, admin_url: str, database: str) -> None:
        self.inner = inner
        self.admin_url = admin_url
        self.database = database
        self.written: list[str] = []

    def put_new(self, key, data, content_type):
        self.inner.put_new(key, data, content_type)
        self.written.append(key)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.database}" WITH ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND application_name = 'ingest-under-test'",
                         (self.database,))

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_database_down_after_object_write_is_503_and_gc_removes_the_orphan(services, database_url, partner, db, store):
    database = database_url.rsplit("/", 1)[1]
    app_url = database_url + "?application_name=ingest-under-test"
    failing = _DatabaseFailsAfterWrite(store, services.admin_database_url, database)
    app = create_app(make_settings(services, app_url), object_store=failing)
    kept = None
    try:
        with ServerThread(app) as server:
            kept = post(server, partner, v1_record())
    finally:
        with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')

    assert kept.status_code == 503 and "retry-after" in kept.headers
    assert len(failing.written) == 1
    orphan = failing.written[0]
    assert partner_counts(db, partner.partner_id)["ingested_records"] == 0
    assert store.get(orphan)  # the orphan exists until gc runs

    # A referenced object from a normal request must survive the same gc pass.
    with ServerThread(create_app(make_settings(services, database_url))) as server:
        ok = post(server, partner, v1_record())
    assert ok.status_code == 202

    from datetime import timedelta
    # Scoped to this partner's objects: the bucket is shared with tests running in parallel,
    # whose fresh objects this worker's database does not reference.
    day_prefix = orphan.rsplit("/", 2)[0] + "/"
    scope = f"{day_prefix}{partner.partner_id}/"
    dry = gc_orphans(db, store, older_than=timedelta(seconds=0), prefix=scope, dry_run=True)
    assert (dry.orphans, dry.deleted) == (1, 0) and store.get(orphan)  # a dry run deletes nothing
    report = gc_orphans(db, store, older_than=timedelta(seconds=0), prefix=scope)
    assert (report.orphans, report.deleted) == (1, 1) and report.referenced >= 1
    with pytest.raises(ObjectNotFound):
        store.get(orphan)
    assert store.get(ok.json()["object_key"])


def test_gc_keeps_young_orphans(db, store):
    from datetime import timedelta

    key = f"raw/2026/01/01/gc-young/{uuid.uuid4()}.json"
    store.put_new(key, b"{}", "application/json")
    gc_orphans(db, store, older_than=timedelta(hours=1), prefix="raw/2026/01/01/gc-young/")
    assert store.get(key) == b"{}"


def test_nul_characters_are_422_with_paths_and_store_nothing(api, partner, db, store):
    """U+0000 is valid JSON but no Postgres text or jsonb can hold it: accepted, such a record
    would never become canonical (and a NUL record_id used to be a 500 with an orphan object)."""
    in_a_value = v1_record()
    in_a_value["encounter"]["diagnoses"][0]["display"] = "Zq\u0000canary"
    in_the_id = v1_record(record_id="rec-\u0000-nul")
    for record, path in ((in_a_value, "$.encounter.diagnoses[0].display"), (in_the_id, "$.record_id")):
        response = post(api, partner, record)
        assert response.status_code == 422, response.text
        assert (path, "no-nul-character") in {(e["path"], e["rule"]) for e in response.json()["errors"]}
        assert "canary" not in response.text and "rec-" not in response.text  # no value echoed
    escaped_backslash = v1_record()
    escaped_backslash["encounter"]["diagnoses"][0]["display"] = "a literal \\u0000, no NUL"
    assert post(api, partner, escaped_backslash).status_code == 202
    assert partner_counts(db, partner.partner_id)["ingested_records"] == 1
    assert len(partner_objects(store, partner.partner_id)) == 1


def test_schema_errors_name_each_failing_path_once(api, partner):
    response = post(api, partner, {"x": 1})
    assert response.status_code == 422
    errors = [(e["path"], e["rule"]) for e in response.json()["errors"]]
    assert len(errors) == len(set(errors))
    assert {("$.record_id", "required"), ("$.patient", "required"), ("$.encounter", "required")} <= set(errors)


def test_record_ids_with_a_slash_and_a_lowercase_bearer_scheme_work(api, partner):
    record = v1_record(record_id=f"clinic-7/visit/{uuid.uuid4().hex[:8]}")
    assert post(api, partner, record, headers={"Authorization": f"bearer {partner.api_key}"}).status_code == 202
    status = httpx.get(f"{api.base_url}/v1/records/{record['record_id']}",
                       headers={"Authorization": f"Bearer {partner.api_key}"})
    assert status.status_code == 200, status.text
    assert status.json()["record_id"] == record["record_id"]


def test_record_status_is_visible_to_its_partner_only(api, partner, database_url):
    from ingest_api.partners import create_partner

    record = v1_record()
    accepted = post(api, partner, record).json()
    own = httpx.get(f"{api.base_url}/v1/records/{record['record_id']}",
                    headers={"Authorization": f"Bearer {partner.api_key}"})
    assert own.status_code == 200
    assert own.json()["status"] == "accepted"
    assert own.json()["object_key"] == accepted["object_key"]
    assert own.json()["history"][0]["status"] == "accepted"

    with psycopg.connect(database_url) as conn:
        other = create_partner(conn, f"other-{uuid.uuid4().hex[:8]}")
    foreign = httpx.get(f"{api.base_url}/v1/records/{record['record_id']}",
                        headers={"Authorization": f"Bearer {other.api_key}"})
    assert foreign.status_code == 404
    assert foreign.headers["content-type"].startswith("application/problem+json")


def test_pii_canary_never_reaches_logs_or_metrics(api, partner, captured_logs):
    record, canaries = canary_record()
    assert post(api, partner, record).status_code == 202
    bad = dict(record, patient=dict(record["patient"], birth_date=canaries[0]))
    assert post(api, partner, bad).status_code == 422
    httpx.get(f"{api.base_url}/v1/records/{record['record_id']}",
              headers={"Authorization": f"Bearer {partner.api_key}"})
    metrics = httpx.get(f"{api.base_url}/metrics").text
    logs = captured_logs.getvalue()
    assert '"msg": "request"' in logs.replace('":"', '": "') or '"msg":"request"' in logs
    assert "ingest_requests_total" in metrics
    for value in canaries:
        assert value not in logs
        assert value not in metrics


def test_readiness_checks_database_and_object_store(api, services, database_url):
    assert httpx.get(f"{api.base_url}/readyz").json()["checks"] == {"database": "ok", "object_store": "ok"}
    from exchange_core.services.processes import free_port

    broken = make_settings(services, database_url, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    with ServerThread(create_app(broken)) as server:
        response = httpx.get(f"{server.base_url}/readyz", timeout=30)
    assert response.status_code == 503
    assert response.json()["checks"]["object_store"] == "unavailable"
