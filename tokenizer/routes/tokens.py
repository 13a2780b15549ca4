"""POST /v1/tokens: T1-T5 for a batch of persons, with the active key."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from fastapi import APIRouter, Request, Response

from tokenizer.dependencies import ServiceAuth, ServicesDep
from tokenizer.keys import ActiveKey
from tokenizer.models import PersonIn, TokensRequest, TokensResponse
from tokenizer.opentoken import PersonAttributes, tokenize
from tokenizer.routes._body import error_responses, parse_body, request_body_doc

router = APIRouter(tags=["tokens"], dependencies=[ServiceAuth])
log = logging.getLogger("tokenizer.tokens")

# 10,000 persons x 6 attributes of up to 256 characters, plus JSON overhead.
MAX_BODY_BYTES = 24 << 20


def tokenize_persons(persons: list[PersonIn], key: ActiveKey) -> list[dict[str, str]]:
    hasher = key.hasher
    return [
        tokenize(PersonAttributes(p.first_name, p.last_name, p.birth_date, p.sex,
                                  p.postal_code, p.ssn), hasher)
        for p in persons
    ]


@router.post(
    "/v1/tokens",
    operation_id="createTokens",
    summary="Tokenize persons (T1-T5) with the active key",
    response_model=TokensResponse,
    responses=error_responses(400, 401, 413, 415, 422),
    openapi_extra=request_body_doc("TokensRequest"),
)
async def create_tokens(request: Request, services: ServicesDep) -> Response:
    body = await parse_body(request, TokensRequest, MAX_BODY_BYTES)
    key = services.key_ring.active()  # one snapshot: every token carries this key id
    started = time.perf_counter()
    # CPU-bound: off the event loop so health checks and other requests keep being served.
    tokens = await asyncio.to_thread(tokenize_persons, body.persons, key)
    elapsed = time.perf_counter() - started
    services.metrics.persons_tokenized.labels(key.key_id).inc(len(tokens))
    log.info("persons tokenized", extra={"persons": len(tokens), "key_id": key.key_id,
                                         "tokenize_ms": round(elapsed * 1000, 2)})
    return Response(orjson.dumps({"key_id": key.key_id, "tokens": tokens}),
                    media_type="application/json")
