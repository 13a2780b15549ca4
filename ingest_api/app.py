"""`create_app(settings)`: the partner API, with everything it holds opened in its lifespan."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Callable

from fastapi import FastAPI

from exchange_core.db import open_async_pool
from exchange_core.object_store import ObjectStore, open_object_store
from exchange_core.settings import Settings
from ingest_api.dependencies import AppServices
from ingest_api.observability import IngestMetrics, RequestContextMiddleware
from ingest_api.partners import ENSURE_DEV_PARTNER_SQL, PartnerKeyCache, dev_partner_params
from ingest_api.problems import install_problem_handlers
from ingest_api.routes import health, ingest, records

log = logging.getLogger("ingest_api")

API_VERSION = "1.0.0"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_app(
    settings: Settings,
    *,
    object_store: ObjectStore | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """Build the API. Tests pass their own settings, store or clock; nothing is global."""
    if clock is None:
        offset = timedelta(seconds=settings.clock_offset_s)
        clock = (lambda: utc_now() + offset) if offset else utc_now
    metrics = IngestMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # wait=False: the API boots while the DB is down and answers 503 / readyz=unavailable.
        pool = await open_async_pool(
            settings.database_url, min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size, name="ingest-api", wait=False,
        )
        store = object_store or open_object_store(settings)
        if settings.exchange_env == "local":
            try:
                async with pool.connection(timeout=10) as conn:
                    await conn.execute("SELECT 1")
                    await conn.execute(ENSURE_DEV_PARTNER_SQL, dev_partner_params())
            except Exception:  # noqa: BLE001 - the API must still start
                log.warning("could not ensure the dev partner; is the database up?")
        app.state.services = AppServices(
            settings=settings, pool=pool, store=store, metrics=metrics,
            key_cache=PartnerKeyCache(), clock=clock,
        )
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Exchange partner API",
        version=API_VERSION,
        description=(
            "Partners post patient records with an Idempotency-Key. Raw payloads are stored "
            "immutably; errors are RFC 9457 problem+json and never echo payload values."
        ),
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    install_problem_handlers(app)
    app.include_router(ingest.router)
    app.include_router(records.router)
    app.include_router(health.router)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """The generated document plus the shared component schemas from contracts/."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    from ingest_api.openapi_components import component_schemas, security_schemes

    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(component_schemas())
    components["securitySchemes"] = security_schemes()
    schema["security"] = [{"partnerKey": []}]
    for path in ("/healthz", "/readyz", "/metrics"):
        for operation in schema["paths"].get(path, {}).values():
            operation["security"] = []
    app.openapi_schema = schema
    return schema
