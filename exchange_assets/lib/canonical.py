"""Publish tokenized records into the canonical v2 tables: persons, encounters, conditions,
observations. v1 records are upcast on the way (their diagnoses become conditions).

Writes are idempotent: rows are staged with COPY and merged with one upsert per table, keyed by
natural ids; an older submission never overwrites a newer one; rows a newer submission of the
same record no longer has are removed. Work is chunked, one transaction per chunk, so a run
killed halfway resumes with whatever is left (`canonical_at IS NULL`), or redoes harmlessly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable

import psycopg

CANONICAL_SCHEMA_VERSION = 2
CANONICAL_TABLES = ("persons", "encounters", "conditions", "observations")
CHUNK_SIZE = 5000


@dataclass
class CanonicalCounts:
    records: int = 0
    persons: int = 0
    encounters: int = 0
    conditions: int = 0
    observations: int = 0

    def add(self, other: CanonicalCounts) -> None:
        for name in ("records", "persons", "encounters", "conditions", "observations"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 / FHIR dateTime → aware datetime. Partial FHIR dates (YYYY, YYYY-MM, YYYY-MM-DD)
    mean their first instant, in UTC; anything unparseable is None rather than a failed batch."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        if len(text) == 4 and text.isdigit():
            return datetime(int(text), 1, 1, tzinfo=timezone.utc)
        if len(text) == 7 and text[4] == "-":
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def rows_for_record(partner_id: str, record_id: str, key_id: str, doc: dict[str, Any]):
    """One de-identified record (v1 or FHIR) → rows for the four tables (without lineage)."""
    person = doc["person"]
    tokens = person["tokens"]
    person_row = (partner_id, record_id, tokens["T1"], tokens["T2"], tokens["T3"], tokens["T4"],
                  tokens["T5"], person.get("key_id") or key_id, person.get("birth_year"),
                  person.get("postal_code3"), person.get("sex"))
    encounters = [(partner_id, enc["encounter_id"], record_id, enc.get("class"),
                   parse_timestamp(enc.get("start")), parse_timestamp(enc.get("end")))
                  for enc in doc.get("encounters", [])]
    conditions = []
    per_encounter: dict[Any, int] = {}
    for ordinal, cond in enumerate(doc.get("conditions", [])):
        encounter_id = cond.get("encounter_id")
        # v1 diagnoses have no id of their own: their place within the encounter is their id.
        position = per_encounter[encounter_id] = per_encounter.get(encounter_id, -1) + 1
        condition_id = cond.get("condition_id") or f"{encounter_id}/diagnosis/{position}"
        conditions.append((partner_id, condition_id, record_id, encounter_id, ordinal,
                           cond.get("system"), cond.get("code"), cond.get("display"),
                           parse_timestamp(cond.get("onset"))))
    observations = []
    per_encounter = {}
    for ordinal, obs in enumerate(doc.get("observations", [])):
        encounter_id = obs.get("encounter_id")
        position = per_encounter[encounter_id] = per_encounter.get(encounter_id, -1) + 1
        observation_id = obs.get("observation_id") or f"{encounter_id}/observation/{position}"
        observations.append((partner_id, observation_id, record_id, encounter_id, ordinal,
                             obs.get("system"), obs.get("code"), _number(obs.get("value_num")),
                             obs.get("value_text"), obs.get("unit"), parse_timestamp(obs.get("effective"))))
    return person_row, encounters, conditions, observations


_STAGE_TABLES = {
    "persons": ("partner_id text, record_id text, token_t1 text, token_t2 text, token_t3 text, "
                "token_t4 text, token_t5 text, token_key_id text, birth_year smallint, "
                "postal_code3 text, sex text"),
    "encounters": "partner_id text, encounter_id text, record_id text, class text, start_at timestamptz, end_at timestamptz",
    "conditions": ("partner_id text, condition_id text, record_id text, encounter_id text, ordinal integer, "
                   "system text, code text, display text, onset_at timestamptz"),
    "observations": ("partner_id text, observation_id text, record_id text, encounter_id text, "
                     "ordinal integer, system text, code text, value_num double precision, "
                     "value_text text, unit text, effective_at timestamptz"),
}
_LINEAGE_COLUMNS = "schema_version smallint, event_id uuid, object_key text, received_at timestamptz, partition_date date"
_NATURAL_KEYS = {
    "persons": ("partner_id", "record_id"),
    "encounters": ("partner_id", "encounter_id"),
    "conditions": ("partner_id", "condition_id"),
    "observations": ("partner_id", "observation_id"),
}


def _columns(table: str) -> list[str]:
    spec = _STAGE_TABLES[table] + ", " + _LINEAGE_COLUMNS
    return [part.strip().split()[0] for part in spec.split(",")]


def _merge_sql(table: str) -> str:
    columns = _columns(table)
    keys = _NATURAL_KEYS[table]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
    # DISTINCT ON keeps the newest submission when one chunk holds two of the same key.
    return (
        f"INSERT INTO canonical.{table} ({', '.join(columns)}) "
        f"SELECT DISTINCT ON ({', '.join(keys)}) {', '.join(columns)} FROM stage_{table} "
        f"ORDER BY {', '.join(keys)}, received_at DESC "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}, updated_at = now() "
        f"WHERE canonical.{table}.received_at <= EXCLUDED.received_at"
    )


def _delete_superseded_sql(table: str) -> str:
    """Rows of a re-submitted record that the newer submission no longer contains."""
    return (
        f"DELETE FROM canonical.{table} t USING stage_records s "
        "WHERE t.partner_id = s.partner_id AND t.record_id = s.record_id "
        "AND t.event_id <> s.event_id AND t.received_at <= s.received_at"
    )


def _stage(conn: psycopg.Connection) -> None:
    for table, spec in _STAGE_TABLES.items():
        conn.execute(f"CREATE TEMP TABLE stage_{table} ({spec}, {_LINEAGE_COLUMNS}) ON COMMIT DROP")
    conn.execute("CREATE TEMP TABLE stage_records (partner_id text, record_id text, event_id uuid, "
                 "received_at timestamptz) ON COMMIT DROP")


def _copy(cur, table: str, columns: list[str], rows: Iterable[tuple]) -> int:
    count = 0
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def _select_chunk(conn, day: date, full: bool, after: tuple | None):
    conditions = ["partition_date = %s"]
    params: list[Any] = [day]
    if not full:
        conditions.append("canonical_at IS NULL")
    if after is not None:
        conditions.append("(received_at, event_id) > (%s, %s)")
        params.extend(after)
    return conn.execute(
        "SELECT event_id, partner_id, record_id, object_key, received_at, partition_date, "
        "token_key_id, deidentified FROM exchange.tokenized_records "
        f"WHERE {' AND '.join(conditions)} ORDER BY received_at, event_id LIMIT %s",
        (*params, CHUNK_SIZE),
    ).fetchall()


def _newest_per_record(rows) -> list:
    newest: dict[tuple[str, str], tuple] = {}
    for row in rows:
        key = (row[1], row[2])
        if key not in newest or newest[key][4] <= row[4]:
            newest[key] = row
    return list(newest.values())


def publish_chunk(conn: psycopg.Connection, rows) -> CanonicalCounts:
    """Stage and merge one chunk of tokenized records, in one transaction."""
    staged = {name: [] for name in CANONICAL_TABLES}
    records = []
    marked = [row[0] for row in rows]
    for event_id, partner_id, record_id, object_key, received_at, partition, key_id, doc in _newest_per_record(rows):
        lineage = (CANONICAL_SCHEMA_VERSION, event_id, object_key, received_at, partition)
        person, encounters, conditions, observations = rows_for_record(partner_id, record_id, key_id, doc)
        staged["persons"].append(person + lineage)
        staged["encounters"].extend(row + lineage for row in encounters)
        staged["conditions"].extend(row + lineage for row in conditions)
        staged["observations"].extend(row + lineage for row in observations)
        records.append((partner_id, record_id, event_id, received_at))
    counts = CanonicalCounts(records=len(rows))
    with conn.transaction(), conn.cursor() as cur:
        _stage(conn)
        _copy(cur, "stage_records", ["partner_id", "record_id", "event_id", "received_at"], records)
        for table in CANONICAL_TABLES:
            setattr(counts, table, _copy(cur, f"stage_{table}", _columns(table), staged[table]))
        # Temp tables have no statistics until analyzed; without them the planner picks
        # nested loops over thousands of staged rows.
        for table in ("stage_records", *(f"stage_{t}" for t in CANONICAL_TABLES)):
            cur.execute(f"ANALYZE {table}")
        # A record already published from a newer submission keeps that one, whole.
        cur.execute("DELETE FROM stage_records s USING canonical.persons p WHERE p.partner_id = s.partner_id "
                    "AND p.record_id = s.record_id AND p.received_at > s.received_at")
        for table in CANONICAL_TABLES:
            cur.execute(f"DELETE FROM stage_{table} t WHERE NOT EXISTS (SELECT 1 FROM stage_records s "
                        "WHERE s.partner_id = t.partner_id AND s.record_id = t.record_id "
                        "AND s.event_id = t.event_id)")
        for table in ("encounters", "conditions", "observations"):
            cur.execute(_delete_superseded_sql(table))
        for table in CANONICAL_TABLES:
            cur.execute(_merge_sql(table))
        cur.execute("UPDATE exchange.tokenized_records SET canonical_at = now() WHERE event_id = ANY(%s)",
                    (marked,))
    return counts


def publish_day(conn: psycopg.Connection, day: date, *, full: bool) -> CanonicalCounts:
    """Every tokenized record of `day` (full) or only those not yet canonical."""
    total = CanonicalCounts()
    after = None
    while rows := _select_chunk(conn, day, full, after):
        total.add(publish_chunk(conn, rows))
        if len(rows) < CHUNK_SIZE:
            break
        after = (rows[-1][4], rows[-1][0])
    return total


def table_counts(conn: psycopg.Connection, days: list[date]) -> dict[str, int]:
    return {
        table: conn.execute(
            f"SELECT count(*) FROM canonical.{table} WHERE partition_date = ANY(%s)", (days,)).fetchone()[0]
        for table in CANONICAL_TABLES
    }


def persons_without_tokens(conn: psycopg.Connection, days: list[date]) -> int:
    return conn.execute(
        "SELECT count(*) FROM canonical.persons WHERE partition_date = ANY(%s) AND "
        "(token_key_id = '' OR coalesce(token_t1, '') = '' OR coalesce(token_t2, '') = '' OR "
        "coalesce(token_t3, '') = '' OR coalesce(token_t4, '') = '' OR coalesce(token_t5, '') = '')",
        (days,)).fetchone()[0]


def rows_with_other_schema_version(conn: psycopg.Connection, days: list[date], table: str) -> int:
    return conn.execute(
        f"SELECT count(*) FROM canonical.{table} WHERE partition_date = ANY(%s) AND schema_version <> %s",
        (days, CANONICAL_SCHEMA_VERSION)).fetchone()[0]
