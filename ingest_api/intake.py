"""The intake transaction: raw object first, then one Postgres transaction.

Crash analysis, step by step:
- before the object write: nothing happened; the partner retries with the same key.
- after the object write, before commit: an unreferenced object; `exchange gc-orphans` removes
  it after the grace period. The retry writes a new object under a new uuid.
- after commit: the idempotency row holds the response; a retry replays it.
A concurrent twin (same partner + key) blocks on the idempotency primary key until the first
transaction ends, then replays its stored response; if it waits longer than the lock timeout it
gets a 409 `idempotency-key-in-flight` and may retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from exchange_core.object_store import ObjectAlreadyExists, ObjectStore, ObjectStoreError
from ingest_api.problems import Problem, service_unavailable

RAW_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class IntakeRequest:
    partner_id: str
    idempotency_key: str
    method: str
    path: str
    schema_version: int
    record_id: str
    raw_body: bytes
    content_type: str
    fingerprint: bytes
    correlation_id: str
    received_at: datetime


@dataclass(frozen=True)
class IntakeResult:
    status: int
    body: dict[str, Any]
    replayed: bool


def object_key_for(partner_id: str, received_at: datetime, object_id: uuid.UUID) -> str:
    """raw/{yyyy}/{mm}/{dd}/{partner_id}/{uuid}.json by UTC receipt date."""
    return f"raw/{received_at:%Y/%m/%d}/{partner_id}/{object_id}.json"


def build_event(req: IntakeRequest, event_id: uuid.UUID, object_key: str, sha256: str) -> dict[str, Any]:
    """The record.ingested event: identifiers and hashes only (contracts/events).

    schema_version 2 (a FHIR bundle) gets the v2 event shape: `payload_format` added.
    """
    event = {
        "event_id": str(event_id),
        "event_type": "record.ingested",
        "schema_version": req.schema_version,
        "occurred_at": req.received_at.isoformat().replace("+00:00", "Z"),
        "partner_id": req.partner_id,
        "record_id": req.record_id,
        "object_key": object_key,
        "sha256": sha256,
        "size_bytes": len(req.raw_body),
        "content_type": req.content_type,
        "correlation_id": req.correlation_id,
    }
    if req.schema_version == 2:
        event["payload_format"] = "fhir-r4-bundle"
    return event


def conflict() -> Problem:
    return Problem(
        409, "idempotency-key-reused", "Idempotency key reused",
        "this Idempotency-Key was already used with a different request body or path",
    )


async def lookup_existing(pool: AsyncConnectionPool, req: IntakeRequest) -> IntakeResult | None:
    """Fast path before any side effect: a finished key replays (or conflicts) at once."""
    async with _connection(pool) as conn:
        row = await (
            await conn.execute(
                "SELECT fingerprint, response_status, response_body FROM ingest.idempotency_keys "
                "WHERE partner_id = %s AND idempotency_key = %s",
                (req.partner_id, req.idempotency_key),
            )
        ).fetchone()
    return _replay_or_conflict(row, req)


def _replay_or_conflict(row, req: IntakeRequest) -> IntakeResult | None:
    if row is None:
        return None
    fingerprint, status, body = row
    if bytes(fingerprint) != req.fingerprint:
        raise conflict()
    return IntakeResult(status=status, body=body, replayed=True)


async def intake(
    pool: AsyncConnectionPool, store: ObjectStore, req: IntakeRequest, *, lock_timeout_ms: int
) -> IntakeResult:
    """Store the raw payload, then record idempotency, ledger, outbox and audit atomically."""
    existing = await lookup_existing(pool, req)
    if existing is not None:
        return existing

    ingest_id = uuid.uuid4()
    event_id = uuid.uuid4()
    object_key = object_key_for(req.partner_id, req.received_at, ingest_id)
    sha256 = hashlib.sha256(req.raw_body).hexdigest()
    await _put_raw_object(store, object_key, req.raw_body)

    body = {
        "record_id": req.record_id,
        "ingest_id": str(ingest_id),
        "event_id": str(event_id),
        "object_key": object_key,
        "sha256": sha256,
        "schema_version": req.schema_version,
        "received_at": req.received_at.isoformat().replace("+00:00", "Z"),
        "correlation_id": req.correlation_id,
        "status": "accepted",
    }
    event = build_event(req, event_id, object_key, sha256)
    try:
        async with _connection(pool) as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            claimed = await (
                await conn.execute(
                    "INSERT INTO ingest.idempotency_keys (partner_id, idempotency_key, "
                    "request_method, request_path, fingerprint, response_status, response_body, "
                    "ingest_id, created_at) VALUES (%s, %s, %s, %s, %s, 202, %s, %s, %s) "
                    "ON CONFLICT (partner_id, idempotency_key) DO NOTHING RETURNING ingest_id",
                    (req.partner_id, req.idempotency_key, req.method, req.path, req.fingerprint,
                     Jsonb(body), ingest_id, req.received_at),
                )
            ).fetchone()
            if claimed is None:
                # A twin committed first (we waited on its row lock). Our object is unreferenced.
                row = await (
                    await conn.execute(
                        "SELECT fingerprint, response_status, response_body "
                        "FROM ingest.idempotency_keys WHERE partner_id = %s AND idempotency_key = %s",
                        (req.partner_id, req.idempotency_key),
                    )
                ).fetchone()
                result = _replay_or_conflict(row, req)
            else:
                await _record_acceptance(conn, req, ingest_id, event_id, object_key, sha256, event)
                result = IntakeResult(status=202, body=body, replayed=False)
    except psycopg.errors.LockNotAvailable:
        await _discard_unreferenced(store, object_key)
        raise Problem(
            409, "idempotency-key-in-flight", "Request in progress",
            "another request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        ) from None
    except Problem as problem:
        # Only a definite refusal (409) frees the object now. After a database error the commit
        # outcome may be unknown, so the object stays and gc-orphans decides after the grace period.
        if problem.status == 409:
            await _discard_unreferenced(store, object_key)
        raise
    if result is None or result.replayed:
        await _discard_unreferenced(store, object_key)
    if result is None:  # pragma: no cover - the row we conflicted with cannot vanish
        raise service_unavailable("idempotency state changed during the request; retry")
    return result


async def _record_acceptance(conn, req, ingest_id, event_id, object_key, sha256, event) -> None:
    await conn.execute(
        "INSERT INTO ingest.ingested_records (ingest_id, partner_id, record_id, schema_version, "
        "object_key, sha256, size_bytes, content_type, event_id, correlation_id, received_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (ingest_id, req.partner_id, req.record_id, req.schema_version, object_key, sha256,
         len(req.raw_body), req.content_type, event_id, req.correlation_id, req.received_at),
    )
    await conn.execute(
        "INSERT INTO ingest.outbox_events (event_id, event_type, topic, message_key, payload, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (event_id, "record.ingested", f"record.ingested.v{req.schema_version}",
         f"{req.partner_id}:{req.record_id}", Jsonb(event), req.received_at),
    )
    await conn.execute(
        "INSERT INTO ingest.audit_log (occurred_at, partner_id, action, ingest_id, correlation_id, details) "
        "VALUES (%s, %s, 'record.accepted', %s, %s, %s)",
        (req.received_at, req.partner_id, ingest_id, req.correlation_id,
         Jsonb({"object_key": object_key, "sha256": sha256, "event_id": str(event_id),
                "idempotency_key_sha256": hashlib.sha256(req.idempotency_key.encode()).hexdigest()})),
    )


async def _put_raw_object(store: ObjectStore, object_key: str, data: bytes) -> None:
    try:
        await asyncio.to_thread(store.put_new, object_key, data, RAW_CONTENT_TYPE)
    except ObjectAlreadyExists:  # pragma: no cover - uuid4 keys do not collide
        raise service_unavailable("raw object key collision; retry") from None
    except ObjectStoreError:
        raise service_unavailable("raw object storage is unavailable; retry later") from None


async def _discard_unreferenced(store: ObjectStore, object_key: str) -> None:
    """Best effort: a leftover is harmless (gc-orphans removes it after the grace period)."""
    try:
        await asyncio.to_thread(store.delete, object_key)
    except ObjectStoreError:
        pass


class _connection:
    """Pool checkout that turns 'database unreachable' into a 503 problem."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._cm = None

    async def __aenter__(self):
        try:
            self._cm = self._pool.connection(timeout=5)
            return await self._cm.__aenter__()
        except (PoolTimeout, psycopg.OperationalError):
            raise service_unavailable("database is unavailable; retry later") from None

    async def __aexit__(self, exc_type, exc, tb):
        try:
            suppressed = await self._cm.__aexit__(exc_type, exc, tb)
        except psycopg.OperationalError:
            raise service_unavailable("database is unavailable; retry later") from None
        if (
            exc_type is not None
            and issubclass(exc_type, psycopg.OperationalError)
            and not issubclass(exc_type, psycopg.errors.LockNotAvailable)
            and not suppressed
        ):
            # Includes an ambiguous commit: the raw object must stay (gc-orphans decides later).
            raise service_unavailable("database is unavailable; retry later") from None
        return suppressed
