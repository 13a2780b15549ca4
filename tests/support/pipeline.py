"""Pipeline test plumbing: a tokenizer and an ingest API with a controllable receipt clock."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import httpx
import psycopg

from exchange_assets.defs.assets import canonical_tables, raw_ingested_records, tokenized_records
from exchange_assets.defs.resources import EventBusResource, PostgresResource, TokenizerResource
from ingest_api.app import create_app as create_ingest_app
from ingest_api.outbox_relay import OutboxRelay, PostgresLogPublisher
from support.servers import ServerThread

SERVICE_TOKEN = "svc-token-for-tests-0001"
RECORD_ASSETS = [raw_ingested_records, tokenized_records, canonical_tables]


def write_key_file(path: Path, active: str = "k1", keys: dict[str, str] | None = None) -> Path:
    keys = keys or {"k1": "pipeline-test-secret-k1-0001", "k2": "pipeline-test-secret-k2-0002"}
    path.write_text(json.dumps({"active_key_id": active, "keys": keys}))
    return path


def fixed_clock(day: date):
    """Receipt times on `day`, strictly increasing from noon UTC (never crossing midnight)."""
    counter = itertools.count()
    lock = threading.Lock()
    start = datetime.combine(day, time(12, 0), tzinfo=timezone.utc)

    def clock() -> datetime:
        with lock:
            return start + timedelta(milliseconds=next(counter))

    return clock


@contextmanager
def ingest_api_on(settings, day: date):
    with ServerThread(create_ingest_app(settings, clock=fixed_clock(day))) as server:
        yield server


def post_records(base_url: str, api_key: str, records: list[dict]) -> list[dict]:
    accepted = []
    with httpx.Client(timeout=30) as client:
        for record in records:
            response = client.post(
                f"{base_url}/v1/ingest", json=record,
                headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": str(uuid.uuid4())})
            assert response.status_code == 202, response.text
            accepted.append(response.json())
    return accepted


def relay_to_event_log(database_url: str) -> int:
    relay = OutboxRelay(database_url, PostgresLogPublisher())
    total = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        while (result := relay.relay_once(conn)).claimed:
            total += result.published
    return total


def pipeline_resources(database_url: str, tokenizer_url: str, event_bus_url: str = "postgres") -> dict:
    return {
        "db": PostgresResource(database_url=database_url),
        "tokenizer": TokenizerResource(base_url=tokenizer_url, service_token=SERVICE_TOKEN, chunk_size=50),
        "event_bus": EventBusResource(event_bus_url=event_bus_url, database_url=database_url),
    }


def days_ago(n: int) -> date:
    return datetime.now(timezone.utc).date() - timedelta(days=n)


def canonical_snapshot(conn, partner_id: str) -> dict[str, list]:
    return {
        "persons": conn.execute(
            "SELECT record_id, token_t1, token_t2, token_t3, token_t4, token_t5, token_key_id, "
            "birth_year, postal_code3, sex, schema_version, event_id::text, object_key "
            "FROM canonical.persons WHERE partner_id = %s ORDER BY record_id", (partner_id,)).fetchall(),
        "encounters": conn.execute(
            "SELECT encounter_id, record_id, class, start_at, end_at, "
            "schema_version, event_id::text, object_key FROM canonical.encounters "
            "WHERE partner_id = %s ORDER BY encounter_id", (partner_id,)).fetchall(),
        "conditions": conn.execute(
            "SELECT condition_id, record_id, encounter_id, ordinal, system, code, display, onset_at, "
            "schema_version, event_id::text FROM canonical.conditions "
            "WHERE partner_id = %s ORDER BY condition_id", (partner_id,)).fetchall(),
        "observations": conn.execute(
            "SELECT observation_id, record_id, encounter_id, ordinal, system, code, value_num, value_text, "
            "unit, effective_at, schema_version, event_id::text FROM canonical.observations "
            "WHERE partner_id = %s ORDER BY observation_id", (partner_id,)).fetchall(),
    }
