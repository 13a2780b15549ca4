"""GET /v1/records/{record_id}: where a partner's record is, for that partner only."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Path
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from ingest_api.dependencies import PartnerDep, ServicesDep
from ingest_api.problems import Problem, service_unavailable

router = APIRouter(tags=["records"])

_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


async def _pipeline_progress(services, event_id) -> list[dict]:
    """tokenized / canonical / dead_lettered, from the pipeline's published progress view."""
    try:
        async with services.pool.connection(timeout=5) as conn:
            rows = await (
                await conn.execute(
                    "SELECT status, at, reason FROM exchange.record_progress "
                    "WHERE event_id = %s ORDER BY at, status DESC", (event_id,))
            ).fetchall()
    except (PoolTimeout, psycopg.OperationalError):
        raise service_unavailable("database is unavailable; retry later") from None
    progress = []
    for status, at, reason in rows:
        entry = {"status": status, "at": _iso(at)}
        if reason:
            entry["reason"] = reason
        progress.append(entry)
    return progress


@router.get(
    # `:path`: partner record ids may hold "/" (neither payload schema forbids it); the
    # OpenAPI document still reads /v1/records/{record_id}.
    "/v1/records/{record_id:path}",
    operation_id="getRecordStatus",
    summary="Status of the calling partner's record (latest submission)",
    responses={
        200: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecordStatus"}}}},
        401: {"description": "Missing or unknown bearer key", **_PROBLEM},
        404: {"description": "No such record for this partner", **_PROBLEM},
    },
)
async def get_record(
    partner_id: PartnerDep,
    services: ServicesDep,
    record_id: str = Path(min_length=1, max_length=128),
):
    try:
        async with services.pool.connection(timeout=5) as conn:
            cur = conn.cursor(row_factory=dict_row)
            rows = await (
                await cur.execute(
                    "SELECT ingest_id, record_id, schema_version, object_key, sha256, event_id, "
                    "status, received_at, published_at FROM ingest.ingested_records "
                    "WHERE partner_id = %s AND record_id = %s ORDER BY received_at DESC LIMIT 20",
                    (partner_id, record_id),
                )
            ).fetchall()
    except (PoolTimeout, psycopg.OperationalError):
        raise service_unavailable("database is unavailable; retry later") from None
    if not rows:
        raise Problem(404, "record-not-found", "Record not found",
                      "no record with this id was submitted by the calling partner")
    latest = rows[0]
    history = [{"status": "accepted", "at": _iso(latest["received_at"])}]
    if latest["published_at"] is not None:
        history.append({"status": "published", "at": _iso(latest["published_at"])})
    history.extend(await _pipeline_progress(services, latest["event_id"]))
    return {
        "record_id": latest["record_id"],
        "ingest_id": str(latest["ingest_id"]),
        "event_id": str(latest["event_id"]),
        "object_key": latest["object_key"],
        "sha256": latest["sha256"],
        "schema_version": latest["schema_version"],
        "status": history[-1]["status"],
        "history": history,
        "submissions": len(rows),
    }
