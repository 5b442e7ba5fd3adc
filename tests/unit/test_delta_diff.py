"""The projector's JSON Patch maker: whatever changed, the standard library's apply of its
operations gives exactly the new document (clients check that by hash; here every shape)."""

from __future__ import annotations

from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from oa.canonical import canonical_json
from oa.runtime.projector.deltas import diff

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.text(max_size=4))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
keys = st.sampled_from(["a", "b", "events", "x/y", "t~1", "", "days"])
docs = st.dictionaries(keys, values, max_size=5)


@st.composite
def changes(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A document and a successor: lists grow at the end and lose entries at the front (as
    our windows do), or change anywhere; keys appear, vanish and change."""
    before: dict[str, Any] = draw(docs)
    after = dict(before)
    for key in list(after):
        old = after[key]
        if isinstance(old, list) and draw(st.booleans()):
            dropped = draw(st.integers(0, len(old)))
            after[key] = old[dropped:] + draw(st.lists(values, max_size=3))
    after.update(draw(st.dictionaries(keys, values, max_size=2)))
    for key in draw(st.lists(st.sampled_from(sorted(after) or ["a"]), max_size=1)):
        after.pop(key, None)
    return before, after


@settings(max_examples=400, deadline=None)
@given(changes())
def test_applying_the_diff_gives_the_new_document(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    before, after = pair
    result = jsonpatch.apply_patch(before, diff(before, after))
    assert canonical_json(result) == canonical_json(after)  # not `==`: 1 == True in Python


def test_a_sliding_window_is_one_remove_and_one_add() -> None:
    before = {"events": [{"seq": i} for i in range(50)], "last_seq": 49}
    after = {"events": [{"seq": i} for i in range(1, 51)], "last_seq": 50}
    assert diff(before, after) == [
        {"op": "remove", "path": "/events/0"},
        {"op": "add", "path": "/events/49", "value": {"seq": 50}},
        {"op": "replace", "path": "/last_seq", "value": 50},
    ]
