"""`create_app(settings)`: the tokenizer service, with its key ring, store and read pool.

Its own process, port and credential (TOKENIZER_SERVICE_TOKEN). It alone holds the HMAC keys.
Logs carry counts, timings and key ids, never payload values.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from exchange_core.object_store import ObjectStore, open_object_store
from exchange_core.settings import Settings
from ingest_api.observability import RequestContextMiddleware
from ingest_api.problems import install_problem_handlers
from tokenizer.dependencies import TokenizerServices
from tokenizer.keys import KeyFileError, KeyRing, open_key_ring
from tokenizer.metrics import TokenizerMetrics
from tokenizer.models import DeidentifyRequest, TokensRequest
from tokenizer.routes import deidentify, health, tokens

log = logging.getLogger("tokenizer")

API_VERSION = "1.0.0"
# Concurrent object reads per process: enough to hide S3 latency, below boto3's 64 connections.
READ_CONCURRENCY = 32
# Never accepted as the service credential: `dev` is the partner API's local key.
_REFUSED_SERVICE_TOKENS = {"", "dev"}
# The Settings default, fine on a laptop, refused in production.
_DEFAULT_LOCAL_TOKEN = "local-dev-token"


def create_app(
    settings: Settings,
    *,
    object_store: ObjectStore | None = None,
    key_ring: KeyRing | None = None,
) -> FastAPI:
    """Build the service. Tests pass their own settings, store or key ring; nothing is global.

    The key ring is opened in the lifespan (not here), so building the app for its OpenAPI
    document needs no key file and generates none.
    """
    service_token = settings.tokenizer_service_token.get_secret_value()
    refused = _REFUSED_SERVICE_TOKENS | ({_DEFAULT_LOCAL_TOKEN} if settings.exchange_env == "production" else set())
    if service_token.strip() in refused:
        raise ValueError("TOKENIZER_SERVICE_TOKEN must be set to a non-placeholder value")
    metrics = TokenizerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            ring = key_ring or open_key_ring(settings)
        except KeyFileError as exc:
            # JSON logs keep only the exception type; the message (a path, never a secret)
            # is what tells the operator what to fix. Re-raised: the service must not start.
            log.error("tokenizer cannot start: key file problem", extra={"reason": str(exc)})
            raise
        store = object_store or open_object_store(settings)
        pool = ThreadPoolExecutor(max_workers=READ_CONCURRENCY, thread_name_prefix="tokenizer-read")
        app.state.services = TokenizerServices(
            settings=settings, store=store, key_ring=ring, metrics=metrics, read_pool=pool,
        )
        log.info("tokenizer ready", extra={"active_key_id": ring.key_id,
                                           "read_concurrency": READ_CONCURRENCY})
        try:
            yield
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="Exchange tokenizer API",
        version=API_VERSION,
        description=(
            "Internal service: OpenToken-compatible person tokens and de-identification of raw "
            "records by reference. Requires the tokenizer service credential; errors are RFC "
            "9457 problem+json and never echo payload values."
        ),
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    app.state.service_token = service_token.encode("utf-8")
    install_problem_handlers(app)
    app.include_router(tokens.router)
    app.include_router(deidentify.router)
    app.include_router(health.router)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """The generated document plus request schemas (bodies are parsed by hand) and security."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    from ingest_api.openapi_components import component_schemas

    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = component_schemas()["Problem"]
    for model in (TokensRequest, DeidentifyRequest):
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(model_schema.pop("$defs", {}))
        schemas[model.__name__] = model_schema
    components["schemas"] = dict(sorted(schemas.items()))
    components["securitySchemes"] = {
        "serviceToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "TOKENIZER_SERVICE_TOKEN; partner API keys are not accepted.",
        }
    }
    schema["security"] = [{"serviceToken": []}]
    for path in ("/healthz", "/readyz", "/metrics"):
        for operation in schema["paths"].get(path, {}).values():
            operation["security"] = []
    app.openapi_schema = schema
    return schema
