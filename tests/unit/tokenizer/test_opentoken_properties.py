"""Property tests for tokenizer.opentoken (OpenToken hash-only tokenization)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
import unicodedata
from dataclasses import fields
from datetime import date

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tokenizer import opentoken
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

TODAY = date(2026, 12, 3)
SECRET = b"HashingKey-for-tests-0001"
HASHER = TokenHasher(SECRET)
EXAMPLES = settings(max_examples=200, deadline=None)

# Which normalized attributes each token needs (a token is blank iff one is invalid).
RULE_ATTRIBUTES = {
    "T1": ("last_name", "first_name", "sex", "birth_date"),
    "T2": ("last_name", "first_name", "birth_date", "postal_code"),
    "T3": ("last_name", "first_name", "sex", "birth_date"),
    "T4": ("ssn", "sex", "birth_date"),
    "T5": ("last_name", "first_name", "sex"),
}

# ---------------------------------------------------------------- strategies
# Built from small pieces rather than st.from_regex: much cheaper to generate.

NAME_PIECES = (
    "Mary", "ann", "JOSÉ", "María", "O'Hara", "Van", "der", "Søren", "Łukasz", "Иван",
    "Ng", "Li", "Ly", "Q.", "J", "X", "Mr.", "Dr", "Mrs", "Rev.", "Doctor", "Jr", "jr.",
    "Sr.", "III", "iv", "2nd", "3RD", "PhD", "XIV", "N/A", "Test", "Unknown",
    "Abdul218", "Mary-Kate", "Renée", "Zoë", "<masked>", "Patient", "not", "found",
)
SEPARATORS = (" ", "  ", "\t", "-", "", ".")
WHITESPACE = ("", " ", "  ", "\t", "\u00a0", "\n")
COMBINING_MARKS = ("\u0300", "\u0301", "\u0302", "\u0303", "\u0308", "\u030a", "\u0327", "\u0328")
MAX_WORD = 12


def digits(count: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=count, max_size=count)


def two_digits(low: int, high: int) -> st.SearchStrategy[str]:
    """Two-digit numbers around the valid range, to hit both sides of each bound."""
    return st.integers(low, high).map("{:02d}".format)


def padded(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """The same values with (possibly empty) surrounding whitespace."""
    pad = st.sampled_from(WHITESPACE)
    return st.builds(lambda before, value, after: before + value + after, pad, strategy, pad)


name_like = st.lists(
    st.tuples(st.sampled_from(NAME_PIECES), st.sampled_from(SEPARATORS)), min_size=1, max_size=4
).map(lambda parts: "".join(piece + separator for piece, separator in parts))
any_name = st.one_of(name_like, st.text(max_size=20))
first_word = st.text(alphabet=string.ascii_letters, min_size=1, max_size=MAX_WORD)
last_word = st.text(alphabet=string.ascii_letters, min_size=3, max_size=MAX_WORD)

birth_dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2035, 12, 31))
DATE_LAYOUTS = (
    "{y:04d}-{m:02d}-{d:02d}", "{y:04d}/{m:02d}/{d:02d}", "{m:02d}/{d:02d}/{y:04d}",
    "{m:02d}-{d:02d}-{y:04d}", "{d:02d}.{m:02d}.{y:04d}", "{y:04d}-{m:02d}-{d:02d}T10:15:30Z",
    "{y:04d}-{m:02d}-{d:02d}T23:30:00.123Z", "{y:04d}-{m:02d}-{d:02d}T23:30:00-05:00",
    "{y:04d}-{m:02d}-{d:02d}T00:00:00.000+14:00",
)
laid_out_dates = st.builds(
    lambda day, layout: layout.format(y=day.year, m=day.month, d=day.day),
    birth_dates, st.sampled_from(DATE_LAYOUTS),
)
# Every raw shape the birth-date check accepts, with often impossible numbers.
years = st.one_of(st.integers(1890, 2040).map(str), digits(4))
date_separator = st.sampled_from("-/")
year_first_dates = st.builds(
    "{}{}{}{}{}".format, years, date_separator, two_digits(0, 13), date_separator, two_digits(0, 32)
)
year_last_dates = st.builds(
    "{}{}{}{}{}".format, two_digits(0, 32), st.sampled_from("-/."), two_digits(0, 32),
    st.sampled_from("-/."), years,
)
zones = st.one_of(
    st.sampled_from(("", "Z")),
    st.builds("{}{}:{}".format, st.sampled_from("+-"), two_digits(0, 25), two_digits(0, 61)),
)
timestamps = st.builds(
    "{}-{}-{}T{}:{}:{}{}{}".format, years, two_digits(0, 13), two_digits(0, 32),
    two_digits(0, 25), two_digits(0, 61), two_digits(0, 62),
    st.sampled_from(("", ".000", ".123")), zones,
)
date_shaped = st.one_of(year_first_dates, year_last_dates, timestamps)
any_birth_date = st.one_of(date_shaped, laid_out_dates, st.text(max_size=12))

SEX_SPELLINGS = ("M", "m", "Male", "male", "F", "f", "Female", "female", "MALE", "FEMALE", "U", "X")
any_sex = st.one_of(padded(st.sampled_from(SEX_SPELLINGS)), st.text(max_size=8))

us_zip = st.one_of(
    digits(3), digits(4), digits(5), digits(9), st.builds("{}-{}".format, digits(5), digits(4))
)
letter = st.sampled_from(string.ascii_letters)
digit = st.sampled_from(string.digits)
canadian_postal = st.one_of(
    st.builds(
        lambda *chars: "".join(chars), letter, digit, letter,
        st.sampled_from(("", " ")), digit, letter, digit,
    ).flatmap(lambda code: st.sampled_from((code[:3], code[:-2], code[:-1], code))),
    st.sampled_from(("K1A", "k1a 0a6", "H0H0H0", "M7A1B0", "M7A 1B1", "M5V 3L9", "J1X", "J1X1")),
)
any_postal = st.one_of(padded(st.one_of(us_zip, canadian_postal)), st.text(max_size=10))

ssn_like = st.one_of(
    st.builds(
        "{}{}{}{}{}".format, digits(3), st.sampled_from(("-", "")), digits(2),
        st.sampled_from(("-", "")), digits(4),
    ),
    st.builds(
        "{}{}".format, st.integers(7, 9).flatmap(digits), st.sampled_from(("", ".", ".0", ".000"))
    ),
    st.sampled_from(("123-45-6789", "123456789", "000-00-0000", "999-12-3456", "1234567", "0012345")),
)
any_ssn = st.one_of(ssn_like, st.text(max_size=12))

persons = st.builds(
    PersonAttributes,
    first_name=st.none() | any_name,
    last_name=st.none() | any_name,
    birth_date=st.none() | any_birth_date,
    sex=st.none() | any_sex,
    postal_code=st.none() | any_postal,
    ssn=st.none() | any_ssn,
)
VALID_OTHERS = {"birth_date": "1985-07-04", "sex": "F", "postal_code": "98101", "ssn": "782-41-9056"}


def normalized_attributes(person: PersonAttributes) -> dict[str, str | None]:
    return {
        "first_name": normalize_first_name(person.first_name),
        "last_name": normalize_last_name(person.last_name),
        "birth_date": normalize_birth_date(person.birth_date, today=TODAY),
        "sex": normalize_sex(person.sex),
        "postal_code": normalize_postal_code(person.postal_code),
        "ssn": normalize_ssn(person.ssn),
    }


# ------------------------------------------------------------- idempotence


@EXAMPLES
@given(any_name)
def test_name_normalization_is_idempotent(raw: str) -> None:
    # Normalized names are bare ASCII letters, so a second pass changes nothing.
    first = normalize_first_name(raw)
    if first is not None:
        assert first.isascii() and first.isalpha()
        assert normalize_first_name(first) == first
    last = normalize_last_name(raw)
    if last is not None:
        assert last.isascii() and last.isalpha()
        assert normalize_last_name(last) == last


@EXAMPLES
@given(birth_dates, st.sampled_from(DATE_LAYOUTS))
def test_birth_date_layouts_normalize_to_iso_and_are_idempotent(day: date, layout: str) -> None:
    raw = layout.format(y=day.year, m=day.month, d=day.day)
    in_range = date(1910, 1, 1) <= day <= TODAY
    normalized = normalize_birth_date(raw, today=TODAY)
    assert normalized == (day.isoformat() if in_range else None)
    if normalized is not None:
        assert normalize_birth_date(normalized, today=TODAY) == normalized


@EXAMPLES
@given(any_sex)
def test_sex_normalization_is_idempotent(raw: str) -> None:
    normalized = normalize_sex(raw)
    assert normalized in (None, "Male", "Female")
    if normalized is not None:
        assert normalize_sex(normalized) == normalized


@EXAMPLES
@given(any_postal)
def test_postal_normalization_is_idempotent_except_padded_fsa(raw: str) -> None:
    normalized = normalize_postal_code(raw)
    if normalized is None:
        return
    if normalized.endswith(" 000"):
        # A bare Canadian FSA ("J1X") is padded to "J1X 000", which is not itself
        # an accepted shape: re-normalizing that value makes it invalid.
        assert normalize_postal_code(normalized) is None
    else:
        assert normalize_postal_code(normalized) == normalized


def passes_dashed_ssn_rules(ssn: str) -> bool:
    area, group, serial = ssn.split("-")
    denied = {
        "111-11-1111", "222-22-2222", "333-33-3333", "444-44-4444", "555-55-5555",
        "777-77-7777", "888-88-8888", "001-23-4567", "010-10-1010", "012-34-5678",
        "087-65-4321", "098-76-5432", "099-99-9999", "111-22-3333", "121-21-2121",
        "123-45-6789",
    }
    return (
        ssn not in denied
        and area not in ("000", "666")
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
    )


@EXAMPLES
@given(any_ssn)
def test_ssn_normalization_is_idempotent_only_when_dashed_form_is_valid(raw: str) -> None:
    # Undashed SSNs skip the area/group/serial and deny-list checks, but the
    # normalized form has dashes, so re-normalizing applies those checks.
    normalized = normalize_ssn(raw)
    if normalized is None:
        return
    expected = normalized if passes_dashed_ssn_rules(normalized) else None
    assert normalize_ssn(normalized) == expected


@EXAMPLES
@given(date_shaped)
def test_fast_date_parser_agrees_with_opentoken_layouts(raw: str) -> None:
    # The ASCII fast path must give exactly what strptime with OpenToken's layouts gives.
    assert opentoken._parse_birth_date(raw) == opentoken._parse_with_layouts(raw)


@EXAMPLES
@given(st.dates(min_value=date(1910, 1, 2), max_value=date(2100, 12, 31)))
def test_today_is_the_injectable_upper_bound(day: date) -> None:
    person = PersonAttributes("Maria", "Garcia", day.isoformat(), "F", "98101", "782-41-9056")
    day_before = date.fromordinal(day.toordinal() - 1)
    assert normalize_birth_date(day.isoformat(), today=day) == day.isoformat()
    assert normalize_birth_date(day.isoformat(), today=day_before) is None
    assert tokenize(person, HASHER, today=day)["T1"] != BLANK_TOKEN
    assert tokenize(person, HASHER, today=day_before)["T1"] == BLANK_TOKEN


# --------------------------------------------------------------- equivalence


MARK_CHOICES = ("",) + COMBINING_MARKS  # "" = leave the letter unmarked


def respell(word: str, case_flips: int, mark_indexes: str, compose: bool) -> str:
    """Same name with other letter case and combining marks (optionally precomposed).

    Bit i of ``case_flips`` swaps the case of letter i; digit i of
    ``mark_indexes`` picks the combining mark added after letter i.
    """
    letters = [
        (ch.swapcase() if case_flips >> i & 1 else ch) + MARK_CHOICES[int(mark_indexes[i])]
        for i, ch in enumerate(word)
    ]
    spelled = "".join(letters)
    return unicodedata.normalize("NFC", spelled) if compose else spelled


respellings = st.tuples(
    st.integers(0, 2**MAX_WORD - 1),
    st.text(alphabet="".join(map(str, range(len(MARK_CHOICES)))), min_size=MAX_WORD, max_size=MAX_WORD),
    st.booleans(),
    st.sampled_from(WHITESPACE),
    st.sampled_from(WHITESPACE),
)


@EXAMPLES
@given(first_word, last_word, respellings, respellings)
def test_case_whitespace_and_accent_variants_give_same_tokens(
    first: str, last: str, first_variant: tuple, last_variant: tuple
) -> None:
    def vary(word: str, variant: tuple) -> str:
        case_flips, mark_indexes, compose, before, after = variant
        return before + respell(word, case_flips, mark_indexes, compose) + after

    original = PersonAttributes(first, last, **VALID_OTHERS)
    variant = PersonAttributes(vary(first, first_variant), vary(last, last_variant), **VALID_OTHERS)
    assert tokenize(variant, HASHER, TODAY) == tokenize(original, HASHER, TODAY)


# ------------------------------------------------------------------ secrecy


@EXAMPLES
@given(first_word, last_word, st.binary(max_size=40), st.binary(max_size=40))
def test_different_secrets_give_different_tokens(
    first: str, last: str, secret: bytes, other_secret: bytes
) -> None:
    # HMAC zero-pads short keys, so b"k" and b"k\x00" are the SAME key: only
    # secrets that differ after trailing zero bytes are really different.
    assume(secret.rstrip(b"\x00") != other_secret.rstrip(b"\x00"))
    person = PersonAttributes(first, last, **VALID_OTHERS)
    tokens = tokenize(person, TokenHasher(secret), TODAY)
    other_tokens = tokenize(person, TokenHasher(other_secret), TODAY)
    for rule in TOKEN_RULES:
        if tokens[rule] == BLANK_TOKEN:
            assert other_tokens[rule] == BLANK_TOKEN
        else:
            assert tokens[rule] != other_tokens[rule]


def test_secrets_differing_only_by_trailing_zero_bytes_are_one_hmac_key() -> None:
    person = PersonAttributes("Maria", "Garcia", **VALID_OTHERS)
    assert tokenize(person, TokenHasher(b"k"), TODAY) == tokenize(person, TokenHasher(b"k\x00"), TODAY)


# derandomize: a 4-7 character value made of base64 characters could, by pure
# chance (~1e-6 per pair), occur inside a token; fixed examples keep this exact.
@settings(max_examples=200, deadline=None, derandomize=True)
@given(persons)
def test_no_token_equals_or_contains_an_input_value(person: PersonAttributes) -> None:
    tokens = tokenize(person, HASHER, TODAY)
    values = [getattr(person, field.name) for field in fields(person)]
    values += normalized_attributes(person).values()
    values += signatures(person, TODAY).values()
    for value in values:
        if value is None or len(value) < 4:
            continue
        for token in tokens.values():
            if token != BLANK_TOKEN:  # the blank marker is all zeros, not a hash
                assert value != token and value not in token


# ------------------------------------------------------- robustness / blanks


@EXAMPLES
@given(persons)
def test_any_input_tokenizes_without_raising_and_invalid_means_blank(person: PersonAttributes) -> None:
    tokens = tokenize(person, HASHER, TODAY)
    normalized = normalized_attributes(person)
    assert tuple(tokens) == TOKEN_RULES
    for rule, token in tokens.items():
        blank = any(normalized[attribute] is None for attribute in RULE_ATTRIBUTES[rule])
        if blank:
            assert token == BLANK_TOKEN
        else:
            assert len(token) == 44 and len(base64.b64decode(token, validate=True)) == 32


@EXAMPLES
@given(st.text(max_size=60), st.binary(max_size=70))
def test_hasher_matches_plain_hmac_formula(signature: str, secret: bytes) -> None:
    hasher = TokenHasher(secret)
    hex_text = hashlib.sha256(signature.encode("utf-8")).hexdigest().encode("ascii")
    expected = base64.b64encode(hmac.new(secret, hex_text, hashlib.sha256).digest()).decode()
    # Twice: reusing the pre-keyed HMAC must not leak state between tokens.
    assert hasher.token(signature) == expected
    assert hasher.token(signature) == expected
    assert hasher.token(None) == BLANK_TOKEN
