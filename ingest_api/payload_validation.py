"""Payload schemas from contracts/ and value-free validation errors."""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"

_format_checker = FormatChecker(formats=())


@_format_checker.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if isinstance(value, str):
        date.fromisoformat(value)
    return True


@_format_checker.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("date-time needs a UTC offset")
    return True


def load_contract(relative: str) -> dict[str, Any]:
    return orjson.loads((CONTRACTS_DIR / relative).read_bytes())


@lru_cache(maxsize=None)
def validator_for(relative: str) -> Draft202012Validator:
    schema = load_contract(relative)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=_format_checker)


def describe_errors(validator: Draft202012Validator, document: Any, limit: int = 50) -> list[dict[str, str]]:
    """Failing locations and rule names, sorted; never the offending values."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for error in validator.iter_errors(document):
        # One `required` error per missing property, each naming them all: keep each once.
        for item in _describe(error):
            found.setdefault((item["path"], item["rule"]), item)
        if len(found) >= limit:
            break
    return [found[key] for key in sorted(found)][:limit]


def _describe(error: ValidationError) -> list[dict[str, str]]:
    path = error.json_path
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return [{"path": f"{path}.{name}", "rule": "required"} for name in missing]
    return [{"path": path, "rule": str(error.validator)}]
