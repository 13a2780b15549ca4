"""The v1 canonical derivation (persons; encounters with diagnoses/observations as jsonb).

Superseded by canonical.py (v2). Kept while partitions may still be at v1: it is the baseline
the v1→v2 migration tests compare against, and the rollback path until the contract step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

CANONICAL_SCHEMA_VERSION = 1
CANONICAL_TABLES = ("persons", "encounters")


@dataclass(frozen=True)
class CanonicalCounts:
    records: int
    persons: int
    encounters: int


def _select_pending(conn: psycopg.Connection, day: date, full: bool):
    condition = "" if full else " AND canonical_at IS NULL"
    return conn.execute(
        "SELECT event_id::text, partner_id, record_id, object_key, received_at, partition_date, "
        "token_key_id, deidentified FROM exchange.tokenized_records "
        f"WHERE partition_date = %s{condition} ORDER BY received_at",
        (day,),
    ).fetchall()


def publish_partition(conn: psycopg.Connection, day: date, *, full: bool) -> CanonicalCounts:
    """Upsert canonical rows for `day`: every tokenized record (full) or only pending ones."""
    with conn.transaction():
        rows = _select_pending(conn, day, full)
        persons, encounters = [], []
        for event_id, partner_id, record_id, object_key, received_at, partition, key_id, doc in rows:
            lineage = (CANONICAL_SCHEMA_VERSION, event_id, object_key, received_at, partition)
            persons.append(_person_row(partner_id, record_id, key_id, doc["person"]) + lineage)
            encounters.extend(
                row + lineage for row in _encounter_rows(partner_id, record_id, doc))
        with conn.cursor() as cur:
            cur.executemany(_UPSERT_PERSON, persons)
            cur.executemany(_UPSERT_ENCOUNTER, encounters)
        if rows:
            conn.execute(
                "UPDATE exchange.tokenized_records SET canonical_at = now() "
                "WHERE event_id = ANY(%s::uuid[])", ([row[0] for row in rows],))
    return CanonicalCounts(len(rows), len(persons), len(encounters))


def _person_row(partner_id: str, record_id: str, key_id: str, person: dict[str, Any]) -> tuple:
    tokens = person["tokens"]
    return (partner_id, record_id, tokens["T1"], tokens["T2"], tokens["T3"], tokens["T4"],
            tokens["T5"], person.get("key_id") or key_id, person.get("birth_year"),
            person.get("postal_code3"), person.get("sex"))


def iso_utc(value: str | None) -> str | None:
    """The canonical text form of a timestamp inside v1 jsonb (same as canonical_v1.iso_utc)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encounter_rows(partner_id: str, record_id: str, doc: dict[str, Any]) -> list[tuple]:
    diagnoses: dict[str, list] = defaultdict(list)
    for condition in doc.get("conditions", []):
        diagnoses[condition.get("encounter_id")].append(
            {k: condition.get(k) for k in ("system", "code", "display")})
    observations: dict[str, list] = defaultdict(list)
    for obs in doc.get("observations", []):
        observations[obs.get("encounter_id")].append(
            {"system": obs.get("system"), "code": obs.get("code"), "value_num": obs.get("value_num"),
             "value_text": obs.get("value_text"), "unit": obs.get("unit"),
             "effective": iso_utc(obs.get("effective"))})
    return [
        (partner_id, enc["encounter_id"], record_id, enc.get("class"), enc.get("start"), enc.get("end"),
         Jsonb(diagnoses.get(enc["encounter_id"], [])), Jsonb(observations.get(enc["encounter_id"], [])))
        for enc in doc.get("encounters", [])
    ]


_LINEAGE_SET = ("schema_version = EXCLUDED.schema_version, event_id = EXCLUDED.event_id, "
                "object_key = EXCLUDED.object_key, received_at = EXCLUDED.received_at, "
                "partition_date = EXCLUDED.partition_date, updated_at = now()")

_UPSERT_PERSON = (
    "INSERT INTO canonical.persons (partner_id, record_id, token_t1, token_t2, token_t3, token_t4, "
    "token_t5, token_key_id, birth_year, postal_code3, sex, schema_version, event_id, object_key, "
    "received_at, partition_date) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (partner_id, record_id) DO UPDATE SET token_t1 = EXCLUDED.token_t1, "
    "token_t2 = EXCLUDED.token_t2, token_t3 = EXCLUDED.token_t3, token_t4 = EXCLUDED.token_t4, "
    "token_t5 = EXCLUDED.token_t5, token_key_id = EXCLUDED.token_key_id, "
    "birth_year = EXCLUDED.birth_year, postal_code3 = EXCLUDED.postal_code3, sex = EXCLUDED.sex, "
    f"{_LINEAGE_SET} WHERE canonical.persons.received_at <= EXCLUDED.received_at"
)

_UPSERT_ENCOUNTER = (
    "INSERT INTO canonical.encounters (partner_id, encounter_id, record_id, class, start_at, end_at, "
    "diagnoses, observations, schema_version, event_id, object_key, received_at, partition_date) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (partner_id, encounter_id) DO UPDATE SET record_id = EXCLUDED.record_id, "
    "class = EXCLUDED.class, start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at, "
    "diagnoses = EXCLUDED.diagnoses, observations = EXCLUDED.observations, "
    f"{_LINEAGE_SET} WHERE canonical.encounters.received_at <= EXCLUDED.received_at"
)


def table_counts(conn: psycopg.Connection, day: date) -> dict[str, int]:
    return {
        table: conn.execute(
            f"SELECT count(*) FROM canonical.{table} WHERE partition_date = %s", (day,)).fetchone()[0]
        for table in CANONICAL_TABLES
    }


def persons_without_tokens(conn: psycopg.Connection, day: date) -> int:
    return conn.execute(
        "SELECT count(*) FROM canonical.persons WHERE partition_date = %s AND "
        "(token_key_id = '' OR coalesce(token_t1, '') = '' OR coalesce(token_t2, '') = '' OR "
        "coalesce(token_t3, '') = '' OR coalesce(token_t4, '') = '' OR coalesce(token_t5, '') = '')",
        (day,)).fetchone()[0]


def rows_with_other_schema_version(conn: psycopg.Connection, day: date, expected: int) -> int:
    return sum(
        conn.execute(
            f"SELECT count(*) FROM canonical.{table} WHERE partition_date = %s AND schema_version <> %s",
            (day, expected)).fetchone()[0]
        for table in CANONICAL_TABLES
    )
