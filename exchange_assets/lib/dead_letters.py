"""Dead letters: permanent faults are parked in exchange.dead_letter_records and announced on
the `<topic>.dlq` topic (reason code, identifiers; no PII). A redrive resolves them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import psycopg

from exchange_assets.lib.records import RecordRef
from exchange_core.event_bus import KafkaPublisher, OutgoingEvent, append_to_event_log


@dataclass(frozen=True)
class DeadLetter:
    ref: RecordRef
    reason_code: str
    detail: str


def record_dead_letters(conn: psycopg.Connection, letters: Sequence[DeadLetter], run_id: str) -> None:
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO exchange.dead_letter_records (event_id, partner_id, record_id, object_key, "
            "sha256, received_at, partition_date, reason_code, detail, dagster_run_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (event_id) DO UPDATE SET reason_code = EXCLUDED.reason_code, "
            "detail = EXCLUDED.detail, attempts = exchange.dead_letter_records.attempts + 1, "
            "last_failed_at = now(), resolved_at = NULL, dagster_run_id = EXCLUDED.dagster_run_id",
            [(l.ref.event_id, l.ref.partner_id, l.ref.record_id, l.ref.object_key, l.ref.sha256,
              l.ref.received_at, l.ref.partition_date, l.reason_code, l.detail, run_id)
             for l in letters],
        )


def resolve_dead_letters(conn: psycopg.Connection, event_ids: Sequence[str]) -> int:
    """Mark dead letters resolved once their record was tokenized after all."""
    if not event_ids:
        return 0
    return conn.execute(
        "UPDATE exchange.dead_letter_records SET resolved_at = now() "
        "WHERE event_id = ANY(%s::uuid[]) AND resolved_at IS NULL", (list(event_ids),)
    ).rowcount


def dlq_events(letters: Sequence[DeadLetter]) -> list[OutgoingEvent]:
    return [
        OutgoingEvent(
            event_id=letter.ref.event_id,
            topic=f"record.ingested.v{letter.ref.schema_version}.dlq",
            key=f"{letter.ref.partner_id}:{letter.ref.record_id}",
            payload={
                "event_id": letter.ref.event_id,
                "partner_id": letter.ref.partner_id,
                "record_id": letter.ref.record_id,
                "object_key": letter.ref.object_key,
                "sha256": letter.ref.sha256,
                "reason_code": letter.reason_code,
                "detail": letter.detail,
            },
        )
        for letter in letters
    ]


def publish_dead_letters(conn: psycopg.Connection, event_bus_url: str, letters: Sequence[DeadLetter]) -> None:
    """To the `.dlq` topic (Kafka) or the event log (embedded). At least once, like the relay."""
    events = dlq_events(letters)
    if not events:
        return
    if event_bus_url.startswith("kafka://"):
        publisher = KafkaPublisher(event_bus_url.removeprefix("kafka://"))
        try:
            acknowledged = publisher.publish(events)
        finally:
            publisher.close()
        if len(acknowledged) < len(events):
            # The DB rows are the record of truth; failing here lets the retry policy re-announce.
            raise RuntimeError("dead letters not acknowledged by kafka")
    else:
        with conn.transaction():
            append_to_event_log(conn, events)
