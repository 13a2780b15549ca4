"""Canonical JSON, request fingerprints, and the one JSON rule storage adds (no U+0000).

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


# JSON can carry U+0000 only as this escape; raw bytes without it cannot hold one.
_NUL_ESCAPE = b"\\u0000"
NUL_RULE = "no-nul-character"
NUL_MESSAGE = "strings must not contain U+0000 (no Postgres text or jsonb column can store it)"


def nul_character_paths(document: Any, raw: bytes | None = None, limit: int = 50) -> list[dict[str, str]]:
    """Where a string (a value or an object key) holds U+0000, which Postgres text and jsonb
    cannot store: such a record would be accepted and then jam its day in the pipeline. `raw`
    (the request bytes) skips the walk for the common case. Paths only, never values."""
    if raw is not None and _NUL_ESCAPE not in raw:
        return []
    found: list[dict[str, str]] = []
    stack: list[tuple[str, Any]] = [("$", document)]
    while stack and len(found) < limit:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                found.append({"path": path, "rule": NUL_RULE, "message": NUL_MESSAGE})
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:  # the key itself is not named: it may be a value in disguise
                    found.append({"path": f"{path}.*", "rule": NUL_RULE, "message": NUL_MESSAGE})
                    continue
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    found.sort(key=lambda item: item["path"])
    return found


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
