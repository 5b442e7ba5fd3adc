"""Canonical JSON: what every hash is computed over, so its bytes must never drift.

The reference is the stdlib with sorted keys, compact separators and no ASCII escaping;
the two agree on strings, 64-bit integers, booleans, null and nested objects/arrays.
Where they differ (floats: orjson writes `1e-7` and `0.00001`, the stdlib `1e-07`, `1e-05`), the stored bytes are
orjson's, and a verifier in another language must reproduce those: pinned below.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oa.canonical import NotCanonicalizable, canonical_json, event_hash, payload_hash

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# Every code point except lone surrogates (they have no UTF-8 form; see below).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
SCALARS = st.none() | st.booleans() | INT64 | TEXT
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=25,
)


def reference(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@given(VALUES)
def test_equals_the_stdlib_reference(value: Any) -> None:
    assert canonical_json(value) == reference(value)


@given(st.dictionaries(TEXT, SCALARS, max_size=8))
def test_key_order_of_the_input_does_not_matter(value: dict[str, Any]) -> None:
    backwards = dict(reversed(list(value.items())))
    assert canonical_json(backwards) == canonical_json(value)
    assert payload_hash(backwards) == hashlib.sha256(reference(value)).hexdigest()


def test_form_pinned() -> None:
    value = {"b": [1, {"z": None, "a": True}], "a": 'hé ✓ \U0001f600 \u2028 "q" \\ \n \x00 \x7f'}
    assert (
        canonical_json(value)
        == (
            '{"a":"hé ✓ \U0001f600 \u2028 \\"q\\" \\\\ \\n \\u0000 \x7f","b":[1,{"a":true,"z":null}]}'
        ).encode()
    )


def test_keys_sort_by_code_point() -> None:
    # Code-point order (= UTF-8 byte order), not UTF-16 order as in RFC 8785: U+FF5E sorts
    # before U+1F600 here, after it in UTF-16. Pinned so a cross-language verifier knows.
    assert canonical_json({"\U0001f600": 1, "\uff5e": 2, "Z": 3, "a": 4}) == (
        '{"Z":3,"a":4,"\uff5e":2,"\U0001f600":1}'.encode()
    )


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -math.inf, {"x": [1, {"y": math.nan}]}, {"n": None, "f": math.inf}]
)
def test_non_finite_floats_are_refused_not_written_as_null(value: Any) -> None:
    with pytest.raises(NotCanonicalizable):
        canonical_json(value)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, {1: "int key"}, "\ud800", {"s": {1, 2}}])
def test_values_without_a_canonical_form_are_refused(value: Any) -> None:
    with pytest.raises(NotCanonicalizable):
        canonical_json(value)


def test_null_alone_is_fine() -> None:
    assert canonical_json({"a": None, "b": [None, 0.5]}) == b'{"a":null,"b":[null,0.5]}'


def test_floats_are_shortest_round_trip_and_differ_from_the_stdlib() -> None:
    assert canonical_json([0.1, 1.5, -0.0, 1e16, 1e-7, 1e-5, 2.0]) == b"[0.1,1.5,-0.0,1e+16,1e-7,0.00001,2.0]"
    # The stdlib disagrees on small exponents: floats are outside the shared contract.
    assert reference([1e-7, 1e-5]) == b"[1e-07,1e-05]"


def test_event_hash_formula() -> None:
    p = payload_hash({"text": "a"})
    material = f"run-1|3|text.delta|{p}|root"
    assert event_hash("run-1", 3, "text.delta", p, None) == hashlib.sha256(material.encode()).hexdigest()
    chained = event_hash("run-1", 4, "text.delta", p, "ab")
    assert chained == hashlib.sha256(f"run-1|4|text.delta|{p}|ab".encode()).hexdigest()
