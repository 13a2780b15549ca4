"""Liveness, readiness and Prometheus metrics (unauthenticated; they reveal no data)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tokenizer.dependencies import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", operation_id="healthz", summary="Liveness: the process is serving")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz",
            summary="Readiness: key file loaded and object store reachable")
async def readyz(services: ServicesDep) -> JSONResponse:
    checks = {"keys": "ok", "object_store": "ok"}
    try:
        services.key_ring.active()
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["keys"] = "unavailable"
    try:
        await asyncio.wait_for(asyncio.to_thread(services.store.check), timeout=3)
    except Exception:  # noqa: BLE001
        checks["object_store"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics", operation_id="metrics", summary="Prometheus metrics",
            response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
