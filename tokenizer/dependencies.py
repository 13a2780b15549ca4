"""App-scoped services and the service-credential check."""

from __future__ import annotations

import hmac
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from exchange_core.object_store import ObjectStore
from exchange_core.settings import Settings
from ingest_api.problems import unauthorized
from tokenizer.keys import KeyRing
from tokenizer.metrics import TokenizerMetrics


@dataclass
class TokenizerServices:
    """Everything the lifespan opens; handlers receive it instead of reaching for globals."""

    settings: Settings
    store: ObjectStore
    key_ring: KeyRing
    metrics: TokenizerMetrics
    read_pool: ThreadPoolExecutor  # bounds concurrent object reads across all requests


def get_services(request: Request) -> TokenizerServices:
    return request.app.state.services


ServicesDep = Annotated[TokenizerServices, Depends(get_services)]


def require_service_token(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """`Authorization: Bearer <TOKENIZER_SERVICE_TOKEN>`, nothing else (no partner keys, no dev).

    The expected token is fixed when the app is created (`app.state.service_token`), so this
    check needs no lifespan state and costs one constant-time compare.
    """
    if not authorization:
        raise unauthorized()
    scheme, _, presented = authorization.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise unauthorized()
    # Starlette decodes headers as latin-1: encoding back gives the bytes that were sent.
    if not hmac.compare_digest(presented.encode("latin-1"), request.app.state.service_token):
        raise unauthorized()


ServiceAuth = Depends(require_service_token)
