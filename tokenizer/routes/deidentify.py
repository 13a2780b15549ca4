"""POST /v1/deidentify: raw objects by reference in, de-identified records out."""

from __future__ import annotations

import logging
import time

import orjson
from fastapi import APIRouter, Request, Response

from ingest_api.problems import service_unavailable
from tokenizer.dependencies import ServiceAuth, ServicesDep
from tokenizer.models import DeidentifyRequest, DeidentifyResponse
from tokenizer.reference_batch import BatchAborted, Reference, deidentify_references
from tokenizer.routes._body import error_responses, parse_body, request_body_doc

router = APIRouter(tags=["deidentify"], dependencies=[ServiceAuth])
log = logging.getLogger("tokenizer.deidentify")

MAX_BODY_BYTES = 2 << 20  # 1,000 references of up to ~1 KiB each
RETRY_AFTER_S = 5


@router.post(
    "/v1/deidentify",
    operation_id="deidentifyRecords",
    summary="De-identify raw records by object reference (key + SHA-256)",
    description=(
        "Reads each raw object from the object store, verifies its SHA-256, validates and "
        "de-identifies it. Per-object faults are per-item results with a reason code; an "
        "unavailable object store fails the whole request with 503 and Retry-After."
    ),
    response_model=DeidentifyResponse,
    responses=error_responses(400, 401, 413, 415, 422, 503),
    openapi_extra=request_body_doc("DeidentifyRequest"),
)
async def deidentify_records(request: Request, services: ServicesDep) -> Response:
    body = await parse_body(request, DeidentifyRequest, MAX_BODY_BYTES)
    refs = [Reference(item.object_key, item.sha256.lower()) for item in body.items]
    key = services.key_ring.active()  # one snapshot for the whole batch
    started = time.perf_counter()
    try:
        outcome = await deidentify_references(refs, services.store, key, services.read_pool)
    except BatchAborted as exc:
        services.metrics.store_unavailable.inc()
        log.warning("object store failed; batch refused",
                    extra={"items": len(refs), "error_type": type(exc.cause).__name__})
        raise service_unavailable("the object store is unavailable; retry the request later",
                                  RETRY_AFTER_S) from None
    elapsed = time.perf_counter() - started
    for reason, count in outcome.reasons.items():
        status = "ok" if reason == "ok" else "error"
        services.metrics.deidentify_results.labels(status, "" if reason == "ok" else reason).inc(count)
    log.info("batch de-identified", extra={
        "items": len(refs), "ok": outcome.reasons.get("ok", 0),
        "errors": len(refs) - outcome.reasons.get("ok", 0),
        **{f"error_{reason}": count for reason, count in outcome.reasons.items() if reason != "ok"},
        "key_id": key.key_id, "elapsed_ms": round(elapsed * 1000, 2),
        "read_ms_total": round(sum(outcome.read_timings) * 1000, 2),
    })
    for seconds in outcome.read_timings:
        services.metrics.object_reads.observe(seconds)
    return Response(orjson.dumps({"key_id": key.key_id, "results": outcome.results}),
                    media_type="application/json")
