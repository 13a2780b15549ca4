"""Single-core throughput of OpenToken T1-T5 tokenization vs a bare hashing loop.

Usage::

    python bench/tokenizer_bench.py [--rows 1000000] [--json]

The 206 persons of the shared OpenToken vectors (or the 105 of the
in-repository subset) are repeated to ``--rows`` rows, then timed in one
process:

* ours: ``tokenizer.opentoken.tokenize`` (validation, normalization,
  signatures and all five tokens, blank ones included);
* bare: only SHA-256 hex -> HMAC-SHA256 -> base64 over the same persons'
  precomputed non-blank signatures, the floor any implementation pays.

Prints persons/s for both and the ratio ours/bare. With ``--json`` one JSON
object goes to stdout and the human lines to stderr.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import json
import platform
import sys
import time
from base64 import b64encode
from collections.abc import Sequence
from datetime import date
from itertools import cycle, islice
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # allow running as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from tokenizer.opentoken import PersonAttributes, TokenHasher, signatures, tokenize  # noqa: E402

SHARED_VECTORS_CSV = REPO_ROOT.parent / "shared" / "data" / "opentoken-vectors" / "vectors.csv"
# A clone on its own has the in-repository subset (tests/data/opentoken-vectors/README.md).
VECTORS_CSV = (SHARED_VECTORS_CSV if SHARED_VECTORS_CSV.is_file()
               else REPO_ROOT / "tests" / "data" / "opentoken-vectors" / "vectors.csv")
SECRET = b"HashingKey-for-tests-0001"
# The vectors' generation date, so validity matches the published rows.
TODAY = date(2026, 12, 3)
ATTRIBUTES = ("first_name", "last_name", "birth_date", "sex", "postal_code", "ssn")
WARMUP_ROWS = 2_000

T = TypeVar("T")


def load_people(path: Path) -> list[PersonAttributes]:
    """The raw inputs of every vector row."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            PersonAttributes(*(row[attribute] for attribute in ATTRIBUTES))
            for row in csv.DictReader(handle)
        ]


def repeat_to(items: Sequence[T], count: int) -> list[T]:
    """``items`` cycled to exactly ``count`` entries (references, not copies)."""
    return list(islice(cycle(items), count))


def time_pipeline(people: Sequence[PersonAttributes], hasher: TokenHasher) -> float:
    """Seconds to tokenize every person (normalization + T1-T5)."""
    start = time.perf_counter()
    for person in people:
        tokenize(person, hasher, TODAY)
    return time.perf_counter() - start


def time_bare_hashing(signature_rows: Sequence[Sequence[bytes]], secret: bytes) -> float:
    """Seconds for sha256-hex -> HMAC -> base64 over precomputed signatures only."""
    keyed_mac = hmac.new(secret, digestmod=hashlib.sha256)
    sha256 = hashlib.sha256
    start = time.perf_counter()
    for person_signatures in signature_rows:
        for signature in person_signatures:
            mac = keyed_mac.copy()
            mac.update(sha256(signature).hexdigest().encode("ascii"))
            b64encode(mac.digest())
    return time.perf_counter() - start


def non_blank_signatures(person: PersonAttributes) -> tuple[bytes, ...]:
    """UTF-8 signatures of the person's non-blank tokens (blank ones cost nothing)."""
    return tuple(
        signature.encode("utf-8")
        for signature in signatures(person, TODAY).values()
        if signature is not None
    )


def run(rows: int) -> dict[str, float | int | str]:
    """Time both loops over ``rows`` persons; return the figures."""
    people = load_people(VECTORS_CSV)
    hasher = TokenHasher(SECRET)
    distinct_signatures = [non_blank_signatures(person) for person in people]

    time_pipeline(repeat_to(people, WARMUP_ROWS), hasher)
    time_bare_hashing(repeat_to(distinct_signatures, WARMUP_ROWS), SECRET)

    ours_seconds = time_pipeline(repeat_to(people, rows), hasher)
    signature_rows = repeat_to(distinct_signatures, rows)
    bare_seconds = time_bare_hashing(signature_rows, SECRET)

    ours_rate = rows / ours_seconds
    bare_rate = rows / bare_seconds
    return {
        "rows": rows,
        "distinct_persons": len(people),
        "hashed_tokens_per_person": sum(map(len, signature_rows)) / rows,
        "ours_seconds": ours_seconds,
        "bare_seconds": bare_seconds,
        "ours_persons_per_s": ours_rate,
        "bare_persons_per_s": bare_rate,
        "ratio_ours_over_bare": ours_rate / bare_rate,
        "python": platform.python_version(),
    }


def human_lines(result: dict[str, float | int | str]) -> list[str]:
    return [
        f"rows: {result['rows']:,} ({result['distinct_persons']} vector persons repeated), "
        f"Python {result['python']}, single process",
        f"ours (normalize + T1-T5):        {result['ours_persons_per_s']:>10,.0f} persons/s "
        f"({result['ours_seconds']:.2f} s)",
        f"bare (sha256-hex, hmac, base64): {result['bare_persons_per_s']:>10,.0f} persons/s "
        f"({result['bare_seconds']:.2f} s, {result['hashed_tokens_per_person']:.2f} hashed tokens/person)",
        f"ratio ours/bare: {result['ratio_ours_over_bare']:.3f}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="persons to tokenize (default 1,000,000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.rows <= 0:
        parser.error("--rows must be positive")
    if not VECTORS_CSV.is_file():
        parser.error(f"vectors not found: {VECTORS_CSV}")

    result = run(args.rows)
    human_output = sys.stderr if args.json else sys.stdout
    for line in human_lines(result):
        print(line, file=human_output)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
