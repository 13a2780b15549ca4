"""OpenToken tokenization (hash-only mode), re-implemented from the written rules.

Reproduces the T1-T5 tokens of OpenToken 1.12.5 (Python) as described in
``shared/data/opentoken-vectors/README.md``:

1. validate each attribute on its raw value (missing/invalid -> blank token),
2. normalize it,
3. build the token signature (upper-cased parts joined with ``|``),
4. token = base64(HMAC-SHA256(secret, lower-hex(SHA-256(signature)))).

Everything here is a pure function over strings, standard library only.

Raw-value shape checks use ``re.match`` with a ``$`` anchor on purpose: that is
how OpenToken checks them, and ``$`` also matches before one final newline, so
e.g. ``"1985-07-04\\n"`` or ``"123456789\\n"`` pass the shape check there too.
Any other leading/trailing whitespace is rejected where the rules say so.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from binascii import b2a_base64, hexlify
from dataclasses import dataclass
from datetime import date, datetime

BLANK_TOKEN = "0" * 64
TOKEN_RULES = ("T1", "T2", "T3", "T4", "T5")


@dataclass(frozen=True, slots=True)
class PersonAttributes:
    """Raw person attributes exactly as received (``None`` or blank = missing)."""

    first_name: str | None = None
    last_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    postal_code: str | None = None
    ssn: str | None = None


# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------

# Compared case-insensitively and exactly (not "contains").
_NAME_PLACEHOLDERS = frozenset(
    placeholder.lower()
    for placeholder in (
        "Unknown", "N/A", "None", "Test", "Sample", "Donor", "Patient",
        "Automation Test", "Automationtest", "patient not found", "patientnotfound",
        "<masked>", "Anonymous", "zzztrash", "Missing", "Unavailable",
        "Not Available", "NotAvailable",
    )
)

# One leading title; it needs whitespace after it, so "Dr.Sarah" keeps "Dr".
_TITLE_PREFIX = re.compile(
    r"^\s*(?:mr|mrs|ms|miss|dr|prof|capt|sir|col|gen|cmdr|lt|rabbi|father|brother"
    r"|sister|hon|honorable|reverend|rev|doctor)\.?\s+",
    re.IGNORECASE,
)
# One generational suffix at the very end, after whitespace.
_GENERATIONAL_SUFFIX = re.compile(
    r"\s+(?:jr\.?|sr\.?|junior|senior|I{1,3}|IV|VI{0,3}|IX|X|\d+(?:st|nd|rd|th))$",
    re.IGNORECASE,
)
# "John Q." / "Mary J": whitespace, one non-space character, optional period.
_TRAILING_INITIAL = re.compile(r"\s\S\.?$")
_NON_LETTERS = re.compile(r"[^A-Za-z]+")
_VOWELS = frozenset("aeiouAEIOU")


def _fold_accents(value: str) -> str:
    """Trim, decompose (NFD) and drop combining marks (category Mn).

    Letters that do not decompose (ø, ß, Ł, Cyrillic...) are kept here; the
    final ASCII-letter filter deletes them.
    """
    trimmed = value.strip()
    if trimmed.isascii():  # ASCII is already NFD and has no marks
        return trimmed
    decomposed = unicodedata.normalize("NFD", trimmed)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def _is_single_ascii_word(value: str) -> bool:
    """True for a non-empty run of A-Z/a-z: no title, suffix or initial can apply."""
    return value.isascii() and value.isalpha()


def _first_name_letters(raw: str) -> str:
    """First-name normalization: fold, drop title, suffix, initial, non-letters."""
    name = _fold_accents(raw)
    if _is_single_ascii_word(name):
        return name
    without_title = _TITLE_PREFIX.sub("", name, count=1).strip()
    if without_title:  # a bare title ("Dr") is kept as the name
        name = without_title
    without_suffix = _GENERATIONAL_SUFFIX.sub("", name, count=1).strip()
    if without_suffix:
        name = without_suffix
    name = _TRAILING_INITIAL.sub("", name, count=1).strip()
    return _NON_LETTERS.sub("", name)


def _last_name_letters(raw: str) -> str:
    """Last-name normalization: fold, drop suffix, non-letters (no title/initial)."""
    name = _fold_accents(raw)
    if _is_single_ascii_word(name):
        return name
    without_suffix = _GENERATIONAL_SUFFIX.sub("", name, count=1)
    if without_suffix.strip():
        name = without_suffix
    return _NON_LETTERS.sub("", name)


def _is_placeholder_name(value: str) -> bool:
    return value.lower() in _NAME_PLACEHOLDERS


def _is_acceptable_last_name(name: str) -> bool:
    """3+ letters, or 2 letters with a vowel (y is not one), or "Ng"; no placeholder."""
    if len(name) >= 3:
        return not _is_placeholder_name(name)
    if len(name) == 2:
        return not _VOWELS.isdisjoint(name) or name.lower() == "ng"
    return False  # empty, or a single letter


def normalize_first_name(raw: str | None) -> str | None:
    """Return the normalized first name (ASCII letters, case kept) or ``None`` if invalid."""
    if raw is None or not raw.strip() or _is_placeholder_name(raw):
        return None
    name = _first_name_letters(raw)
    if not name or _is_placeholder_name(name):
        return None
    return name


def normalize_last_name(raw: str | None) -> str | None:
    """Return the normalized last name (ASCII letters, case kept) or ``None`` if invalid."""
    if raw is None or not raw.strip() or _is_placeholder_name(raw):
        return None
    name = _last_name_letters(raw)
    return name if _is_acceptable_last_name(name) else None


# --------------------------------------------------------------------------
# Birth date
# --------------------------------------------------------------------------

_MIN_BIRTH_DATE = date(1910, 1, 1)

# Together these three are the accepted raw shapes; checked on the UNTRIMMED value.
_YEAR_FIRST_DATE = re.compile(r"^(\d{4})([-/])(\d{2})([-/])(\d{2})$")
_YEAR_LAST_DATE = re.compile(r"^(\d{2})([-./])(\d{2})([-./])(\d{4})$")
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{3})?(Z|[+-]\d{2}:\d{2})?$"
)
# OpenToken's parse layouts, used verbatim only for the rare non-ASCII digits
# (strptime accepts some Unicode digits in some fields, which is hard to mimic).
_DATE_LAYOUTS = (
    "%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y", "%m-%d-%Y", "%d.%m.%Y",
    "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z",
)


def _calendar_date(year: str, month: str, day: str) -> date | None:
    try:
        return date(int(year), int(month), int(day))
    except ValueError:  # month 13, Feb 30, year 0...
        return None


def _parse_year_first(match: re.Match[str]) -> date | None:
    year, separator, month, second_separator, day = match.groups()
    if separator != second_separator:  # no layout mixes "-" and "/"
        return None
    return _calendar_date(year, month, day)


def _parse_year_last(match: re.Match[str]) -> date | None:
    first, separator, second, second_separator, year = match.groups()
    if separator != second_separator:
        return None
    if separator == ".":  # dd.MM.yyyy is day first; "/" and "-" are month first
        return _calendar_date(year, second, first)
    return _calendar_date(year, first, second)


def _parse_timestamp(match: re.Match[str]) -> date | None:
    year, month, day, hour, minute, second, zone = match.groups()
    if zone is None:  # the shape allows it, but no layout parses a zone-less timestamp
        return None
    if int(hour) > 23 or int(minute) > 59 or int(second) > 59:
        return None
    if zone != "Z" and (int(zone[1:3]) > 23 or int(zone[4:6]) > 59):
        return None  # offsets must stay strictly within +/-24h
    return _calendar_date(year, month, day)  # date as written, no UTC conversion


def _parse_with_layouts(raw: str) -> date | None:
    """Parse with strptime and OpenToken's layouts, in its order (slow, exact)."""
    text = raw.strip()
    for layout in _DATE_LAYOUTS:
        try:
            return datetime.strptime(text, layout).date()
        except ValueError:
            continue
    return None


def _has_birth_date_shape(raw: str) -> bool:
    return any(shape.match(raw) for shape in (_YEAR_FIRST_DATE, _YEAR_LAST_DATE, _TIMESTAMP))


def _parse_birth_date(raw: str) -> date | None:
    """Parse an accepted raw birth-date shape into a calendar date, else ``None``."""
    if not raw.isascii():
        # Non-ASCII digits: strptime takes them in some fields only, so defer to it.
        return _parse_with_layouts(raw) if _has_birth_date_shape(raw) else None
    if match := _YEAR_FIRST_DATE.match(raw):
        return _parse_year_first(match)
    if match := _YEAR_LAST_DATE.match(raw):
        return _parse_year_last(match)
    if match := _TIMESTAMP.match(raw):
        return _parse_timestamp(match)
    return None


def normalize_birth_date(raw: str | None, today: date | None = None) -> str | None:
    """Return the birth date as ``yyyy-MM-dd`` or ``None`` if invalid.

    Valid dates lie in ``[1910-01-01, today]``; ``today`` defaults to the
    current local date and is injectable for reproducible results.
    """
    if raw is None:
        return None
    parsed = _parse_birth_date(raw)
    if parsed is None:
        return None
    latest = today if today is not None else date.today()
    if not _MIN_BIRTH_DATE <= parsed <= latest:
        return None
    return parsed.isoformat()


# --------------------------------------------------------------------------
# Sex
# --------------------------------------------------------------------------

# Case-sensitive after the first letter: "MALE" and "FEMALE" are rejected.
_SEX = re.compile(r"^\s*(?:[Mm](?:ale)?|[Ff](?:emale)?)\s*$")


def normalize_sex(raw: str | None) -> str | None:
    """Return ``'Male'`` / ``'Female'`` or ``None`` if invalid."""
    if raw is None or not _SEX.match(raw):
        return None
    return "Male" if raw.strip()[0] in "Mm" else "Female"


# --------------------------------------------------------------------------
# Postal code (US ZIP, then Canadian)
# --------------------------------------------------------------------------

_US_ZIP = re.compile(r"^\s*(?:\d{3}|\d{4}|\d{5}(?:-\d{4})?|\d{9})\s*$")
_US_ZIP_DENIED_PREFIXES = (
    "11111", "22222", "33333", "66666", "77777", "99999",
    "01234", "12345", "54321", "98765", "000", "555", "888",
)
_CANADIAN_POSTAL = re.compile(r"^\s*[A-Za-z]\d[A-Za-z](?:\s?\d(?:[A-Za-z]\d?)?)?\s*$")
_CANADIAN_PLACEHOLDERS = frozenset(
    ("A1A 1A1", "X0X 0X0", "Y0Y 0Y0", "Z0Z 0Z0", "A0A 0A0",
     "B1B 1B1", "C2C 2C2", "K1A 0A6", "H0H 0H0")
)
_CANADIAN_RESERVED_AREAS = frozenset(("K1A", "M7A", "H0H"))
# Local parts that padding produces ("000", "1A0"); also hits real codes like M7A 1B0.
_PADDED_LOCAL_PART = re.compile(r"000|\d[A-Z]0")
_WHITESPACE = re.compile(r"\s+")


def _normalize_us_zip(raw: str) -> str | None:
    if not _US_ZIP.match(raw):
        return None
    zip_code = raw.strip()
    if zip_code.startswith(_US_ZIP_DENIED_PREFIXES):
        return None
    if len(zip_code) == 3:
        return zip_code + "00"
    if len(zip_code) == 4:  # padded on the RIGHT, so the ZIP3 changes
        return zip_code + "0"
    return zip_code[:5]  # ZIP+4 with or without dash


def _pad_canadian(compact: str) -> str:
    """``A1A`` -> ``A1A 000``, ``A1A1`` -> ``A1A 1A0``, ``A1A1A`` -> ``A1A 1A0``."""
    if len(compact) == 3:
        return compact + " 000"
    if len(compact) == 4:
        return f"{compact[:3]} {compact[3]}A0"
    if len(compact) == 5:
        return f"{compact[:3]} {compact[3:]}0"
    return f"{compact[:3]} {compact[3:]}"


def _normalize_canadian_postal_code(raw: str) -> str | None:
    if not _CANADIAN_POSTAL.match(raw):
        return None
    code = _pad_canadian(_WHITESPACE.sub("", raw).upper())
    if code in _CANADIAN_PLACEHOLDERS:
        return None
    if code[:3] in _CANADIAN_RESERVED_AREAS and _PADDED_LOCAL_PART.fullmatch(code[4:]):
        return None
    return code


def normalize_postal_code(raw: str | None) -> str | None:
    """Return a 5-digit US ZIP or an ``A1A 1A1`` Canadian code, or ``None`` if invalid."""
    if raw is None:
        return None
    return _normalize_us_zip(raw) or _normalize_canadian_postal_code(raw)


# --------------------------------------------------------------------------
# Social Security Number
# --------------------------------------------------------------------------

# Exact dashed strings: the undashed forms of these are accepted.
_SSN_DENYLIST = frozenset((
    "111-11-1111", "222-22-2222", "333-33-3333", "444-44-4444",
    "555-55-5555", "777-77-7777", "888-88-8888", "001-23-4567",
    "010-10-1010", "012-34-5678", "087-65-4321", "098-76-5432",
    "099-99-9999", "111-22-3333", "121-21-2121", "123-45-6789",
))
# (a) 7-9 bare digits (+ optional ".000") with no further checks, or
# (b) ddd-dd-dddd with optional dashes and area/group/serial checks.
_SSN_SHAPE = re.compile(
    r"^(?:\d{7,9}(?:\.0*)?|(?!000|666|9\d\d)\d{3}-?(?!00)\d{2}-?(?!0000)\d{4})$"
)


def normalize_ssn(raw: str | None) -> str | None:
    """Return the SSN as ``ddd-dd-dddd`` or ``None`` if invalid (checks use the raw value)."""
    if raw is None or not raw.strip() or raw in _SSN_DENYLIST or not _SSN_SHAPE.match(raw):
        return None
    digits = raw.strip().replace("-", "").partition(".")[0]
    if len(digits) < 9:  # left-pad 7-8 digits, even onto the deny-list
        digits = f"{int(digits):09d}"
    return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"


# --------------------------------------------------------------------------
# Signatures and tokens
# --------------------------------------------------------------------------

_SEX_IN_TOKEN = {"Male": "MALE", "Female": "FEMALE"}


def _join(*parts: str | None) -> str | None:
    """Join signature parts with ``|``; ``None`` (blank) if any part is missing."""
    if None in parts:
        return None
    return "|".join(parts)  # type: ignore[arg-type]


def signatures(person: PersonAttributes, today: date | None = None) -> dict[str, str | None]:
    """Return the T1-T5 signatures (plaintext before hashing); ``None`` = blank token."""
    first = normalize_first_name(person.first_name)
    last = normalize_last_name(person.last_name)
    dob = normalize_birth_date(person.birth_date, today)
    sex = normalize_sex(person.sex)
    postal = normalize_postal_code(person.postal_code)
    ssn = normalize_ssn(person.ssn)

    # Names are ASCII letters by now, so str.upper() is plain A-Z.
    last_part = last.upper() if last else None
    first_part = first.upper() if first else None
    sex_part = _SEX_IN_TOKEN[sex] if sex else None
    return {
        "T1": _join(last_part, first_part and first_part[:1], sex_part, dob),
        "T2": _join(last_part, first_part, dob, postal and postal[:3].upper()),
        "T3": _join(last_part, first_part, sex_part, dob),
        "T4": _join(ssn and ssn.replace("-", ""), sex_part, dob),
        "T5": _join(last_part, first_part and first_part[:3], sex_part),
    }


_sha256 = hashlib.sha256


class TokenHasher:
    """Hash-only token transformer bound to one secret."""

    __slots__ = ("_keyed_mac",)

    def __init__(self, secret: bytes | str) -> None:
        """Key the HMAC once; ``str`` secrets are taken as UTF-8 bytes."""
        key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        # Copying a keyed HMAC skips re-deriving the key pads for every token.
        self._keyed_mac = hmac.new(key, digestmod=hashlib.sha256)

    def token(self, signature: str | None) -> str:
        """base64(HMAC-SHA256(secret, hex(SHA-256(signature)))), or ``BLANK_TOKEN``."""
        if signature is None:
            return BLANK_TOKEN
        # The HMAC input is the 64-character lower-case hex TEXT, not the raw digest.
        mac = self._keyed_mac.copy()
        mac.update(hexlify(_sha256(signature.encode("utf-8")).digest()))
        return b2a_base64(mac.digest(), newline=False).decode("ascii")


def tokenize(
    person: PersonAttributes, hasher: TokenHasher, today: date | None = None
) -> dict[str, str]:
    """Return the T1-T5 tokens of one person (``BLANK_TOKEN`` where blank)."""
    token = hasher.token
    return {rule: token(signature) for rule, signature in signatures(person, today).items()}
