"""U+0000 detection for payloads (Postgres text and jsonb cannot store it): paths, never values."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from exchange_core.canonical_json import NUL_RULE, nul_character_paths

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def test_values_and_keys_are_found_by_path_without_the_key_itself():
    document = {"a": ["ok", "x\x00y"], "b": {"secret\x00key": 1, "c": "\x00"}}
    paths = nul_character_paths(document)
    assert [(p["path"], p["rule"]) for p in paths] == [("$.a[1]", NUL_RULE), ("$.b.*", NUL_RULE), ("$.b.c", NUL_RULE)]
    assert "secret" not in str(paths)


def test_an_escaped_backslash_is_not_a_nul():
    raw = orjson.dumps({"a": "\\u0000"})  # the six characters \u0000, not U+0000
    assert b"\\u0000" in raw
    assert nul_character_paths(orjson.loads(raw), raw) == []


def holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


@given(json_values)
def test_found_exactly_when_some_string_holds_a_nul_and_the_raw_shortcut_agrees(document):
    raw = orjson.dumps(document)
    assert bool(nul_character_paths(document)) == holds_nul(document)
    assert nul_character_paths(orjson.loads(raw), raw) == nul_character_paths(document)
