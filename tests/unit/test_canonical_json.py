"""Property tests: canonical JSON and request fingerprints."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings, strategies as st

from exchange_core.canonical_json import canonical_json, parse_json, request_fingerprint

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20) | \
    st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


def _shuffle_keys(value, rng: random.Random):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffle_keys(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffle_keys(v, rng) for v in value]
    return value


@settings(max_examples=300)
@given(json_values, st.integers(0, 2**32), st.sampled_from([None, 0, 2, "\t"]))
def test_reserialization_keeps_the_fingerprint(document, seed, indent):
    reserialized = json.dumps(_shuffle_keys(document, random.Random(seed)), indent=indent,
                              ensure_ascii=bool(seed % 2))
    reparsed = parse_json(reserialized.encode())
    assert canonical_json(reparsed) == canonical_json(document)
    assert request_fingerprint("POST", "/v1/ingest", reparsed) == request_fingerprint("POST", "/v1/ingest", document)


@settings(max_examples=300)
@given(json_values, json_values)
def test_different_documents_have_different_canonical_forms(a, b):
    if a != b or type(a) is not type(b):
        # Python equates 1 == 1.0 == True; JSON keeps them apart, and so does the canonical form.
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            assert canonical_json(a) != canonical_json(b)


@given(json_values)
def test_canonical_form_is_a_fixed_point(document):
    once = canonical_json(document)
    assert canonical_json(parse_json(once)) == once


@given(json_values)
def test_method_and_path_are_part_of_the_fingerprint(document):
    base = request_fingerprint("POST", "/v1/ingest", document)
    assert request_fingerprint("POST", "/v2/ingest", document) != base
    assert request_fingerprint("PUT", "/v1/ingest", document) != base
