"""Which records a run covers: a sensor batch, a whole day (backfill), or open dead letters.

A backfill of day D reads the ingest ledger (ingest.ingested_records, read-only) and so
re-derives D from the raw objects, whatever the bus still retains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class RecordRef:
    """Everything needed to find, verify and attribute one submission; no PII."""

    event_id: str
    partner_id: str
    record_id: str
    object_key: str
    sha256: str
    schema_version: int
    received_at: datetime
    correlation_id: str

    @property
    def partition_date(self) -> date:
        return self.received_at.astimezone(timezone.utc).date()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["received_at"] = self.received_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordRef:
        return cls(**{**data, "received_at": datetime.fromisoformat(data["received_at"])})


def ref_from_event(payload: dict[str, Any]) -> RecordRef:
    """A record.ingested event (v1 or v2 shape) → RecordRef."""
    return RecordRef(
        event_id=payload["event_id"],
        partner_id=payload["partner_id"],
        record_id=payload["record_id"],
        object_key=payload["object_key"],
        sha256=payload["sha256"],
        schema_version=int(payload["schema_version"]),
        received_at=datetime.fromisoformat(payload["occurred_at"].replace("Z", "+00:00")),
        correlation_id=payload.get("correlation_id", ""),
    )


def save_batch(conn: psycopg.Connection, batch_id: str, partition: date, bus_range: str,
               refs: Iterable[RecordRef]) -> None:
    """Idempotent: a tick retried after a crash writes the same batch id again."""
    conn.execute(
        "INSERT INTO exchange.pipeline_batches (batch_id, partition_date, bus_range, events) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (batch_id) DO NOTHING",
        (batch_id, partition, bus_range, Jsonb([ref.to_json() for ref in refs])),
    )


def refs_for_batch(conn: psycopg.Connection, batch_id: str) -> list[RecordRef]:
    row = conn.execute("SELECT events FROM exchange.pipeline_batches WHERE batch_id = %s",
                       (batch_id,)).fetchone()
    if row is None:
        raise LookupError(f"unknown batch {batch_id}")
    unique = {item["event_id"]: RecordRef.from_json(item) for item in row[0]}
    return list(unique.values())


_LEDGER_COLUMNS = ("event_id::text, partner_id, record_id, object_key, sha256, schema_version, "
                   "received_at, correlation_id")


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def refs_for_partition(conn: psycopg.Connection, day: date) -> list[RecordRef]:
    """Every record the ledger accepted on `day` (UTC)."""
    start, end = _day_bounds(day)
    rows = conn.execute(
        f"SELECT {_LEDGER_COLUMNS} FROM ingest.ingested_records "
        "WHERE received_at >= %s AND received_at < %s ORDER BY received_at",
        (start, end),
    ).fetchall()
    return [RecordRef(*row) for row in rows]


def refs_for_redrive(conn: psycopg.Connection, day: date) -> list[RecordRef]:
    """Open dead letters of `day`, with their ledger facts (the ledger is the source of truth)."""
    rows = conn.execute(
        "SELECT l.event_id::text, l.partner_id, l.record_id, l.object_key, l.sha256, "
        "l.schema_version, l.received_at, l.correlation_id "
        "FROM exchange.dead_letter_records d JOIN ingest.ingested_records l USING (event_id) "
        "WHERE d.partition_date = %s AND d.resolved_at IS NULL ORDER BY l.received_at",
        (day,),
    ).fetchall()
    return [RecordRef(*row) for row in rows]


def partition_counts(conn: psycopg.Connection, day: date) -> dict[str, int]:
    """Accepted (ledger) vs tokenized vs open dead letters for one day."""
    start, end = _day_bounds(day)
    accepted = conn.execute(
        "SELECT count(*) FROM ingest.ingested_records WHERE received_at >= %s AND received_at < %s",
        (start, end)).fetchone()[0]
    tokenized = conn.execute(
        "SELECT count(*) FROM exchange.tokenized_records WHERE partition_date = %s", (day,)).fetchone()[0]
    dead = conn.execute(
        "SELECT count(*) FROM exchange.dead_letter_records WHERE partition_date = %s AND resolved_at IS NULL",
        (day,)).fetchone()[0]
    return {"accepted": accepted, "tokenized": tokenized, "dead_lettered": dead}
