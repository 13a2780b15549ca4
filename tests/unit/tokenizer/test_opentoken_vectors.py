"""Byte-for-byte check of tokenizer.opentoken against the shared OpenToken vectors.

The vectors (``shared/data/opentoken-vectors/vectors.csv``, a sibling of the
repository root, or its in-repository subset: tests/support/vectors.py) were
produced by OpenToken 1.12.5 in hash-only mode on 2026-12-03 with the secret
below. Every row is checked for its per-attribute
validity and normalized values, its T1-T5 signatures and its T1-T5 tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest

from support.vectors import EXPECTED_ROWS, VECTORS, vector_rows
from tokenizer.opentoken import (
    BLANK_TOKEN,
    TOKEN_RULES,
    PersonAttributes,
    TokenHasher,
    normalize_birth_date,
    normalize_first_name,
    normalize_last_name,
    normalize_postal_code,
    normalize_sex,
    normalize_ssn,
    signatures,
    tokenize,
)

SECRET = b"HashingKey-for-tests-0001"
# The vectors' generation date: birth dates are valid up to "today".
TODAY = date(2026, 12, 3)
ATTRIBUTES = ("first_name", "last_name", "birth_date", "sex", "postal_code", "ssn")
NORMALIZERS: dict[str, Callable[[str], str | None]] = {
    "first_name": normalize_first_name,
    "last_name": normalize_last_name,
    "birth_date": lambda raw: normalize_birth_date(raw, today=TODAY),
    "sex": normalize_sex,
    "postal_code": normalize_postal_code,
    "ssn": normalize_ssn,
}


VECTOR_ROWS = vector_rows()
MISSING_FILE_MESSAGE = f"OpenToken reference vectors not found at {VECTORS}"
# An empty parameter list would make pytest SKIP; a sentinel makes it FAIL instead.
ROW_PARAMS = [pytest.param(row, id=row["row_id"]) for row in VECTOR_ROWS] or [
    pytest.param(None, id="vectors-file-missing")
]


@pytest.fixture(scope="module")
def hasher() -> TokenHasher:
    return TokenHasher(SECRET)


def person_from_row(row: dict[str, str]) -> PersonAttributes:
    # Empty cells are passed through as "" (OpenToken treats them as missing).
    return PersonAttributes(*(row[attribute] for attribute in ATTRIBUTES))


def test_vectors_file_is_present_and_complete() -> None:
    assert VECTOR_ROWS, MISSING_FILE_MESSAGE
    assert len(VECTOR_ROWS) == EXPECTED_ROWS  # 206 shared, or the 105-row in-repository subset
    expected_columns = {*ATTRIBUTES, *TOKEN_RULES, "row_id"}
    expected_columns |= {f"{attribute}_norm" for attribute in ATTRIBUTES}
    expected_columns |= {f"{attribute}_valid" for attribute in ATTRIBUTES}
    expected_columns |= {f"sig_{rule}" for rule in TOKEN_RULES}
    assert expected_columns <= VECTOR_ROWS[0].keys()


@pytest.mark.parametrize("row", ROW_PARAMS)
def test_attribute_validity_and_normalization(row: dict[str, str] | None) -> None:
    if row is None:
        pytest.fail(MISSING_FILE_MESSAGE)
    expected = {
        attribute: (row[f"{attribute}_valid"] == "true", row[f"{attribute}_norm"])
        for attribute in ATTRIBUTES
    }
    actual = {}
    for attribute in ATTRIBUTES:
        normalized = NORMALIZERS[attribute](row[attribute])
        # *_norm is empty when the attribute is invalid.
        actual[attribute] = (normalized is not None, normalized or "")
    assert actual == expected, row["note"]


@pytest.mark.parametrize("row", ROW_PARAMS)
def test_signatures(row: dict[str, str] | None) -> None:
    if row is None:
        pytest.fail(MISSING_FILE_MESSAGE)
    expected = {rule: row[f"sig_{rule}"] or None for rule in TOKEN_RULES}
    assert signatures(person_from_row(row), today=TODAY) == expected, row["note"]


@pytest.mark.parametrize("row", ROW_PARAMS)
def test_tokens_byte_for_byte(row: dict[str, str] | None, hasher: TokenHasher) -> None:
    if row is None:
        pytest.fail(MISSING_FILE_MESSAGE)
    expected = {rule: row[rule] for rule in TOKEN_RULES}
    actual = tokenize(person_from_row(row), hasher, today=TODAY)
    assert actual == expected, row["note"]
    for rule in TOKEN_RULES:
        assert actual[rule] == BLANK_TOKEN or len(actual[rule]) == 44


def test_missing_attributes_as_none_match_empty_cells(hasher: TokenHasher) -> None:
    """An absent attribute (None) gives the same tokens as an empty cell."""
    if not VECTOR_ROWS:
        pytest.fail(MISSING_FILE_MESSAGE)
    for row in VECTOR_ROWS:
        person = PersonAttributes(*(row[attribute] or None for attribute in ATTRIBUTES))
        assert tokenize(person, hasher, today=TODAY) == {
            rule: row[rule] for rule in TOKEN_RULES
        }, row["row_id"]
