"""Canonical JSON and request fingerprints.

Canonical form: object keys sorted, no insignificant whitespace, UTF-8, non-ASCII kept as is.
Two serializations of the same document (other key order, other whitespace) have the same
canonical bytes, so the same body re-sent by a partner's other JSON library is "the same body".
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


class InvalidJson(ValueError):
    """The bytes are not one JSON document (the message says where, never what)."""


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"malformed JSON at line {exc.lineno} column {exc.colno}") from None


def canonical_json(document: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def request_fingerprint(method: str, path: str, document: Any) -> bytes:
    """SHA-256 over method, path and the canonical body: the idempotency comparison key."""
    digest = hashlib.sha256()
    digest.update(method.upper().encode())
    digest.update(b"\n")
    digest.update(path.encode())
    digest.update(b"\n")
    digest.update(canonical_json(document))
    return digest.digest()
