"""FastAPI dependencies: app-scoped services, partner authentication, the idempotency key."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Callable

import psycopg
from fastapi import Depends, Header, Request
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from exchange_core.object_store import ObjectStore
from exchange_core.settings import Settings
from ingest_api.observability import IngestMetrics
from ingest_api.partners import DEV_PARTNER_ID, PartnerKeyCache, hash_api_key
from ingest_api.problems import Problem, service_unavailable, unauthorized

# RFC 9110 visible ASCII (0x21-0x7E), 1-255 characters.
_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass
class AppServices:
    """Everything the lifespan opens; handlers receive it instead of reaching for globals."""

    settings: Settings
    pool: AsyncConnectionPool
    store: ObjectStore
    metrics: IngestMetrics
    key_cache: PartnerKeyCache
    clock: Callable[[], datetime]


def get_services(request: Request) -> AppServices:
    return request.app.state.services


ServicesDep = Annotated[AppServices, Depends(get_services)]


async def authenticate_partner(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """Bearer partner key → partner id (401 otherwise). `Bearer dev` only when EXCHANGE_ENV=local."""
    # The scheme name is case-insensitive (RFC 9110 §11.1); the key is not.
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized()
    if hmac.compare_digest(token, "dev"):
        if services.settings.exchange_env != "local":
            raise unauthorized("the development key is accepted only when EXCHANGE_ENV=local")
        partner_id = DEV_PARTNER_ID
    else:
        partner_id = await _partner_for_key(services, hash_api_key(token))
    request.scope["state"]["partner_id"] = partner_id
    return partner_id


async def _partner_for_key(services: AppServices, key_hash: bytes) -> str:
    cached = services.key_cache.get(key_hash)
    if cached:
        return cached
    try:
        async with services.pool.connection(timeout=5) as conn:
            row = await (
                await conn.execute(
                    "SELECT partner_id FROM ingest.partners WHERE api_key_hash = %s AND active",
                    (key_hash,),
                )
            ).fetchone()
    except (PoolTimeout, psycopg.OperationalError):
        raise service_unavailable("database is unavailable; retry later") from None
    if row is None:
        raise unauthorized()
    services.key_cache.put(key_hash, row[0])
    return row[0]


PartnerDep = Annotated[str, Depends(authenticate_partner)]


def idempotency_key(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="1-255 visible ASCII characters, unique per partner and request body.",
        ),
    ] = None,
) -> str:
    if key is None:
        raise Problem(400, "idempotency-key-missing", "Idempotency-Key required",
                      "send an Idempotency-Key header (1-255 visible ASCII characters)")
    if len(request.headers.getlist("idempotency-key")) > 1:  # which one would the partner mean?
        raise Problem(400, "idempotency-key-invalid", "Idempotency-Key invalid",
                      "send exactly one Idempotency-Key header")
    if not _IDEMPOTENCY_KEY_RE.match(key):
        raise Problem(400, "idempotency-key-invalid", "Idempotency-Key invalid",
                      "the Idempotency-Key must be 1-255 visible ASCII characters")
    return key


IdempotencyKeyDep = Annotated[str, Depends(idempotency_key)]
