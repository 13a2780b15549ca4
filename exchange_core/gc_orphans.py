"""Remove raw objects that no ledger row references, once they are older than a grace period.

Such objects come from a request that wrote its payload and then failed before commit (DB down,
process killed). The grace period must exceed the longest request, so an object whose
transaction is still in flight is never taken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator

import psycopg

from exchange_core.object_store import ObjectStore, StoredObject

_DURATION_RE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`30s`, `15m`, `24h`, `7d`."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise ValueError("duration must look like 30s, 15m, 24h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class GcReport:
    scanned: int
    referenced: int
    too_young: int
    orphans: int  # unreferenced and past the grace period
    deleted: int  # orphans removed: 0 with --dry-run


def _chunks(items: Iterable[StoredObject], size: int) -> Iterator[list[StoredObject]]:
    chunk: list[StoredObject] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def gc_orphans(
    conn: psycopg.Connection, store: ObjectStore, *, older_than: timedelta,
    now: datetime | None = None, dry_run: bool = False, prefix: str = "raw/",
) -> GcReport:
    """Delete unreferenced objects under `prefix` last modified before now - older_than."""
    if not prefix.startswith("raw/"):
        raise ValueError("gc-orphans only manages raw objects (prefix must start with raw/)")
    cutoff = (now or datetime.now(timezone.utc)) - older_than
    scanned = referenced = too_young = orphans = deleted = 0
    for chunk in _chunks(store.list(prefix), 1000):
        scanned += len(chunk)
        keys = [obj.key for obj in chunk]
        known = {
            row[0]
            for row in conn.execute(
                "SELECT object_key FROM ingest.ingested_records WHERE object_key = ANY(%s)", (keys,)
            )
        }
        for obj in chunk:
            if obj.key in known:
                referenced += 1
            elif obj.last_modified > cutoff:
                too_young += 1
            else:
                orphans += 1
                if not dry_run:
                    store.delete(obj.key)
                    deleted += 1
    return GcReport(scanned, referenced, too_young, orphans, deleted)
