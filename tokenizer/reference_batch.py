"""De-identification by reference: read raw objects, verify their hash, parse, de-identify.

Each reference is handled end to end in a worker thread of a bounded pool: the S3 read and the
SHA-256 release the GIL, so reads overlap with the (GIL-bound) parse/validate/tokenize of other
objects. Per-object faults become per-item results; an unavailable object store aborts the
whole batch (`ObjectStoreUnavailable`), because that is transient and the caller retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from exchange_core.canonical_json import InvalidJson, nul_character_paths, parse_json
from exchange_core.object_store import ObjectNotFound, ObjectStore, ObjectStoreError
from tokenizer.deidentify import DeidentifyError, KeySource, deidentify


@dataclass(frozen=True, slots=True)
class Reference:
    object_key: str
    sha256: str  # lower-case hex


@dataclass
class BatchOutcome:
    results: list[dict[str, Any]]
    reasons: Counter = field(default_factory=Counter)  # reason code -> count ("ok" for ok)
    read_timings: list[float] = field(default_factory=list)  # seconds per object read


class BatchAborted(Exception):
    """The object store failed (unavailable or refusing): retry the whole batch later."""

    def __init__(self, cause: ObjectStoreError) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


def _error(object_key: str, reason_code: str, detail: str) -> dict[str, Any]:
    return {"object_key": object_key, "status": "error", "reason_code": reason_code,
            "detail": detail}


def process_reference(
    ref: Reference, store: ObjectStore, key: KeySource, abort: threading.Event, timings: list,
) -> dict[str, Any] | None:
    """One reference → one result dict; None if the batch was aborted before it started."""
    if abort.is_set():
        return None
    started = time.perf_counter()
    try:
        raw = store.get(ref.object_key)
    except ObjectNotFound:
        return _error(ref.object_key, "object_not_found", "no object is stored under this key")
    except ObjectStoreError:
        # Unavailable, or a refusal (e.g. access denied) that would hit every object alike:
        # failing the batch beats dead-lettering good records over a store fault.
        abort.set()
        raise
    finally:
        timings.append(time.perf_counter() - started)  # list.append is atomic under the GIL
    if hashlib.sha256(raw).hexdigest() != ref.sha256:
        return _error(ref.object_key, "hash_mismatch",
                      "the SHA-256 of the stored bytes differs from the reference")
    try:
        document = parse_json(raw)
    except InvalidJson as exc:  # the message gives line/column only
        return _error(ref.object_key, "unparseable_payload", f"the object is not JSON: {exc}")
    nul_paths = nul_character_paths(document, raw)
    if nul_paths:  # accepted before the API refused them; Postgres could never store the output
        where = ", ".join(item["path"] for item in nul_paths[:10])
        return _error(ref.object_key, "invalid_payload", f"strings contain U+0000 at: {where}")
    try:
        record = deidentify(document, key)
    except DeidentifyError as exc:
        return _error(ref.object_key, exc.reason_code, exc.detail)
    return {"object_key": ref.object_key, "status": "ok", "record": record}


async def deidentify_references(
    refs: list[Reference], store: ObjectStore, key: KeySource, pool: Executor,
) -> BatchOutcome:
    """Results in request order. Raises `BatchAborted` if the store failed for any object."""
    loop = asyncio.get_running_loop()
    abort = threading.Event()
    timings: list[float] = []
    futures = [
        loop.run_in_executor(pool, process_reference, ref, store, key, abort, timings)
        for ref in refs
    ]
    # Wait for all (aborted ones return at once) so no exception goes unretrieved.
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, ObjectStoreError):
            raise BatchAborted(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
    results: list[dict[str, Any]] = outcomes  # type: ignore[assignment]
    reasons = Counter(r.get("reason_code", "ok") for r in results)
    return BatchOutcome(results=results, reasons=reasons, read_timings=timings)
