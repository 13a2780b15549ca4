"""Postgres access: connection pools and versioned, idempotent migrations.

Migrations are plain SQL files `NNNN_name.sql` applied in order, each in its own transaction,
recorded in `public.schema_migrations`; an advisory lock makes concurrent `exchange migrate`
calls safe (the second waits, then finds nothing to do).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Callable

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

# Arbitrary constant shared by every migrator process.
_MIGRATION_LOCK_ID = 0x45584348  # "EXCH"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Every bundled migration, ordered by version."""
    found = []
    for entry in resources.files("exchange_core.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def migrate(
    database_url: str, *, log: Callable[[str], None] = lambda _: None, target_version: int | None = None
) -> list[int]:
    """Apply pending migrations (up to `target_version`, if given); return the versions applied."""
    applied_now: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_ID,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS public.schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = dict(conn.execute("SELECT version, checksum FROM public.schema_migrations"))
            for migration in load_migrations():
                if target_version is not None and migration.version > target_version:
                    break
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO public.schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.version)
                log(f"applied migration {migration.version:04d} {migration.name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_ID,))
    return applied_now


def open_pool(database_url: str, *, min_size: int = 1, max_size: int = 8, name: str) -> ConnectionPool:
    """A sync pool, opened and waited for, so a bad URL fails at start-up, not on first use."""
    pool = ConnectionPool(database_url, min_size=min_size, max_size=max_size, name=name, open=False)
    pool.open(wait=True, timeout=30)
    return pool


async def open_async_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 8, name: str, wait: bool = True
) -> AsyncConnectionPool:
    """An async pool for the API. With wait=False the app starts even while the DB is down
    (readiness reports it) instead of refusing to boot."""
    pool = AsyncConnectionPool(
        database_url, min_size=min_size, max_size=max_size, name=name, open=False,
        timeout=10, reconnect_timeout=5,
    )
    await pool.open(wait=wait, timeout=30)
    return pool
