"""Partner API keys: generated once, shown once, stored as SHA-256.

Keys look like `exk_<prefix>_<secret>`; the prefix is stored in clear so operators can tell keys
apart without holding them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

import psycopg

DEV_PARTNER_ID = "dev"
_PARTNER_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class NewPartner:
    partner_id: str
    api_key: str


def hash_api_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def partner_id_from_name(name: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-")[:63]
    if not _PARTNER_ID_RE.match(slug):
        raise ValueError("partner name must contain letters or digits")
    return slug


def create_partner(conn: psycopg.Connection, name: str) -> NewPartner:
    """Insert a partner with a fresh key; returns the key (the only time it is visible)."""
    partner_id = partner_id_from_name(name)
    prefix = secrets.token_hex(4)
    api_key = f"exk_{prefix}_{secrets.token_urlsafe(32)}"
    conn.execute(
        "INSERT INTO ingest.partners (partner_id, display_name, api_key_hash, key_prefix) "
        "VALUES (%s, %s, %s, %s)",
        (partner_id, name.strip(), hash_api_key(api_key), prefix),
    )
    return NewPartner(partner_id, api_key)


# The `dev` partner behind `Bearer dev` (local only). Its stored hash is of a random value
# nobody knows, so it cannot be reached with a real key.
ENSURE_DEV_PARTNER_SQL = (
    "INSERT INTO ingest.partners (partner_id, display_name, api_key_hash, key_prefix) "
    "VALUES (%s, 'Local development', %s, 'dev') ON CONFLICT (partner_id) DO NOTHING"
)


def dev_partner_params() -> tuple[str, bytes]:
    return (DEV_PARTNER_ID, hash_api_key(secrets.token_urlsafe(32)))


class PartnerKeyCache:
    """Key hash → partner id for a short TTL, so auth costs no query on the hot path.
    A deactivated key therefore keeps working for at most `ttl_s` seconds."""

    def __init__(self, ttl_s: float = 30.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[str, float]] = {}

    def get(self, key_hash: bytes) -> str | None:
        hit = self._entries.get(key_hash)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, key_hash: bytes, partner_id: str) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = (partner_id, time.monotonic() + self.ttl_s)
