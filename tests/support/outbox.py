"""Helpers for relay/bus tests: contract-valid outbox rows written the way the API writes them."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone

import orjson
import psycopg


def make_event(partner_id: str = "relaytest", record_id: str | None = None) -> dict:
    event_id = str(uuid.uuid4())
    now = datetime.now(timezone.utc)
    return {
        "event_id": event_id,
        "event_type": "record.ingested",
        "schema_version": 1,
        "occurred_at": now.isoformat().replace("+00:00", "Z"),
        "partner_id": partner_id,
        "record_id": record_id or f"rec-{event_id[:8]}",
        "object_key": f"raw/{now:%Y/%m/%d}/{partner_id}/{uuid.uuid4()}.json",
        "sha256": hashlib.sha256(event_id.encode()).hexdigest(),
        "size_bytes": 100,
        "content_type": "application/json",
        "correlation_id": str(uuid.uuid4()),
    }


def insert_outbox(conn: psycopg.Connection, count: int, partner_id: str = "relaytest") -> list[str]:
    """Insert `count` outbox rows in the caller's transaction; returns their event ids."""
    events = [make_event(partner_id) for _ in range(count)]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ingest.outbox_events (event_id, event_type, topic, message_key, payload) "
            "VALUES (%s, 'record.ingested', 'record.ingested.v1', %s, %s)",
            [(e["event_id"], f"{e['partner_id']}:{e['record_id']}", orjson.dumps(e).decode())
             for e in events],
        )
    return [e["event_id"] for e in events]


def unpublished(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM ingest.outbox_events WHERE published_at IS NULL").fetchone()[0]


def read_all(reader, cursor=None, max_events: int = 5000, rounds: int = 200):
    """Drain a reader from `cursor` until it returns nothing; bounded in rounds."""
    cursor = dict(cursor or {})
    seen = []
    for _ in range(rounds):
        events, cursor = reader.read(cursor, max_events, timeout_s=2.0)
        if not events:
            break
        seen.extend(events)
    return seen, cursor
