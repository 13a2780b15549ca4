"""Tokenize a set of records through the tokenizer and store the de-identified results.

The tokenizer reads and verifies the raw objects itself, so no PII crosses into the pipeline:
what comes back is tokens plus the clinical part. Per-item errors are permanent faults
(dead letters); a failure of the call as a whole is transient (retried).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import psycopg
from psycopg.types.json import Jsonb

from exchange_assets.lib.dead_letters import DeadLetter
from exchange_assets.lib.records import RecordRef
from exchange_assets.lib.tokenizer_client import TokenizerClient

# Keys that must never appear in a de-identified record (checked by the no_plaintext_pii check).
PII_KEYS = frozenset({
    "first_name", "last_name", "name", "given", "family", "ssn", "mrn", "birth_date", "birthdate",
    "birthDate", "postal_code", "postalCode", "address", "line", "telecom", "phone", "email",
    "text", "identifier",
})


@dataclass
class TokenizeOutcome:
    tokenized: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    key_ids: set[str] = field(default_factory=set)


def _chunks(items: Sequence[RecordRef], size: int) -> Iterable[Sequence[RecordRef]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def tokenize_records(
    conn: psycopg.Connection, client: TokenizerClient, refs: Sequence[RecordRef], *,
    run_id: str, chunk_size: int = 500,
) -> TokenizeOutcome:
    """De-identify `refs` in chunks; upsert successes, collect permanent failures."""
    outcome = TokenizeOutcome()
    for chunk in _chunks(refs, chunk_size):
        key_id, results = client.deidentify(
            [{"object_key": ref.object_key, "sha256": ref.sha256} for ref in chunk])
        rows = []
        for ref, result in zip(chunk, results):
            if result.get("object_key") != ref.object_key:
                raise RuntimeError("tokenizer results out of order")
            if result["status"] == "ok":
                rows.append((ref, result["record"]))
            else:
                outcome.dead_letters.append(
                    DeadLetter(ref, result.get("reason_code", "unknown"), result.get("detail", "")))
        _upsert_tokenized(conn, rows, key_id, run_id)
        outcome.tokenized.extend(ref.event_id for ref, _ in rows)
        if rows:
            outcome.key_ids.add(key_id)
    return outcome


def _upsert_tokenized(conn: psycopg.Connection, rows, key_id: str, run_id: str) -> None:
    if not rows:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO exchange.tokenized_records (event_id, partner_id, record_id, object_key, "
            "sha256, correlation_id, payload_version, received_at, partition_date, token_key_id, "
            "deidentified, dagster_run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (event_id) DO UPDATE SET token_key_id = EXCLUDED.token_key_id, "
            "deidentified = EXCLUDED.deidentified, tokenized_at = now(), canonical_at = NULL, "
            "dagster_run_id = EXCLUDED.dagster_run_id",
            [(ref.event_id, ref.partner_id, ref.record_id, ref.object_key, ref.sha256,
              ref.correlation_id, ref.schema_version, ref.received_at, ref.partition_date,
              key_id, Jsonb(record), run_id) for ref, record in rows],
        )


def find_pii_keys(document, path: str = "$") -> list[str]:
    """Paths of keys on the PII list anywhere in a JSON document."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key in PII_KEYS:
                found.append(f"{path}.{key}")
            found.extend(find_pii_keys(value, f"{path}.{key}"))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.extend(find_pii_keys(value, f"{path}[{index}]"))
    return found
