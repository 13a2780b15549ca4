"""Where the OpenToken reference vectors are: the full shared file next to the repository when
it is there, else the in-repository subset (tests/data/opentoken-vectors/README.md)."""

from __future__ import annotations

import csv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_VECTORS = REPO_ROOT.parent / "shared" / "data" / "opentoken-vectors" / "vectors.csv"
VENDORED_VECTORS = REPO_ROOT / "tests" / "data" / "opentoken-vectors" / "vectors.csv"
SHARED_ROWS, VENDORED_ROWS = 206, 105

VECTORS = SHARED_VECTORS if SHARED_VECTORS.is_file() else VENDORED_VECTORS
EXPECTED_ROWS = SHARED_ROWS if VECTORS == SHARED_VECTORS else VENDORED_ROWS


def vector_rows() -> list[dict[str, str]]:
    with VECTORS.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))
