"""`plan_command`, the whole append decision as a pure function: seq, chain, idempotency.

The hash formula is recomputed here with hashlib and the stdlib json module, not with
`oa.canonical`, so a change to either side of the formula is caught.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oa.exceptions import Forbidden, IdempotencyConflict, InvalidRequest, InvalidTransition, SeqMismatch
from oa.runtime.domain.journal import AppendRequest, Event, Plan, StreamHead, plan_command
from oa.runtime.service.runs import run_transition

ALICE = "user:alice"


def formula(run_id: str, seq: int, event_type: str, payload: dict[str, Any], prev: str | None) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    p_hash = hashlib.sha256(body).hexdigest()
    material = f"{run_id}|{seq}|{event_type}|{p_hash}|{prev or 'root'}"
    return hashlib.sha256(material.encode()).hexdigest()


def new_head(run_id: str = "run-1") -> StreamHead:
    return StreamHead("run", run_id, ALICE, "created", exists=False)


def plan(
    requests: list[AppendRequest],
    head: StreamHead | None = None,
    stored: dict[str, Event] | None = None,
    principal: str = ALICE,
) -> Plan:
    return plan_command(head or new_head(), principal, requests, stored or {}, run_transition)


def delta(text: str, key: str | None = None, expected: int | None = None) -> AppendRequest:
    return AppendRequest("text.delta", {"text": text}, key, expected)


def test_fresh_stream_seq_and_chain_follow_the_formula() -> None:
    reqs = [AppendRequest("run.started", {"model": "m"}), delta("hé ✓"), delta("b", "k")]
    p = plan(reqs)
    assert [e.seq for e in p.new_events] == [1, 2, 3]
    prev = None
    for req, ev in zip(reqs, p.new_events, strict=True):
        assert ev.prev_hash == prev
        assert ev.hash == formula("run-1", ev.seq, req.event_type, req.payload, prev)
        assert json.loads(ev.payload_json) == req.payload
        assert ev.position == 0 and ev.principal == ALICE
        prev = ev.hash
    assert p.head.last_seq == 3 and p.head.last_hash == prev and p.head.status == "running"
    assert [o.result for o in p.outcomes] == ["appended"] * 3


def test_continues_an_existing_stream_from_its_head() -> None:
    head = StreamHead("run", "run-1", ALICE, "running", last_seq=41, last_hash="ab" * 32)
    ev = plan([delta("x")], head).new_events[0]
    assert ev.seq == 42 and ev.prev_hash == "ab" * 32
    assert ev.hash == formula("run-1", 42, "text.delta", {"text": "x"}, "ab" * 32)


def test_the_run_id_is_part_of_the_hash() -> None:
    a = plan([delta("x")], new_head("run-a")).new_events[0]
    b = plan([delta("x")], new_head("run-b")).new_events[0]
    assert a.payload_hash == b.payload_hash and a.hash != b.hash


def test_noop_consumes_no_seq() -> None:
    p = plan([AppendRequest("run.started", {}), AppendRequest("run.started", {}), delta("x")])
    assert [o.result for o in p.outcomes] == ["appended", "noop", "appended"]
    assert [e.seq for e in p.new_events] == [1, 2]
    assert not plan([AppendRequest("run.started", {})], replace_status(new_head(), "running")).changed


def replace_status(head: StreamHead, status: str) -> StreamHead:
    return StreamHead(head.kind, head.stream_id, head.owner, status, head.last_seq, head.last_hash, True)


def test_idempotent_replay_returns_the_stored_event_and_writes_nothing() -> None:
    first = plan([delta("a", "k1")]).new_events[0]
    head = StreamHead("run", "run-1", ALICE, "created", 1, first.hash)
    again = plan([delta("a", "k1")], head, {"k1": first})
    assert not again.changed
    assert again.outcomes[0].result == "replayed" and again.outcomes[0].event == first
    assert again.head == head


def test_replay_wins_over_a_now_stale_expected_previous_seq() -> None:
    # A retry of an acknowledged append must replay, not fail: the stream moved on since.
    first = plan([delta("a", "k1", expected=0)]).new_events[0]
    head = StreamHead("run", "run-1", ALICE, "running", 7, "cd" * 32)
    again = plan([delta("a", "k1", expected=0)], head, {"k1": first})
    assert again.outcomes[0].result == "replayed"


@pytest.mark.parametrize(
    "changed",
    [
        delta("b", "k1"),
        AppendRequest("tool.progress", {"text": "a"}, "k1"),
        AppendRequest("run.delta", {}, "k1"),
    ],
)
def test_same_key_different_event_conflicts(changed: AppendRequest) -> None:
    first = plan([delta("a", "k1")]).new_events[0]
    head = StreamHead("run", "run-1", ALICE, "created", 1, first.hash)
    with pytest.raises(IdempotencyConflict) as err:
        plan([changed], head, {"k1": first})
    assert err.value.details == {"idempotency_key": "k1", "seq": 1}


def test_key_repeated_within_one_batch() -> None:
    p = plan([delta("a", "k"), delta("a", "k"), delta("b")])
    assert [o.result for o in p.outcomes] == ["appended", "replayed", "appended"]
    assert p.outcomes[1].event == p.new_events[0]
    assert [e.seq for e in p.new_events] == [1, 2]
    with pytest.raises(IdempotencyConflict) as err:
        plan([delta("a", "k"), delta("b", "k")])
    assert err.value.details["index"] == 1


def test_payload_key_order_does_not_matter_for_replay() -> None:
    a = AppendRequest("run.delta", {"delta": {"x": 1, "y": 2}}, "k")
    b = AppendRequest("run.delta", {"delta": {"y": 2, "x": 1}}, "k")
    assert [o.result for o in plan([a, b]).outcomes] == ["appended", "replayed"]


def test_expected_previous_seq() -> None:
    assert plan([delta("a", expected=0), delta("b", expected=1)]).head.last_seq == 2
    head = StreamHead("run", "run-1", ALICE, "running", 5, "ef" * 32)
    with pytest.raises(SeqMismatch) as err:
        plan([delta("a", expected=4)], head)
    assert err.value.status == 409
    assert err.value.details == {"expected_previous_seq": 4, "last_seq": 5}
    with pytest.raises(SeqMismatch):  # the second one must see the first one's seq
        plan([delta("a", expected=5), delta("b", expected=5)], head)


def test_owner_check() -> None:
    head = StreamHead("run", "run-1", ALICE, "running", 1, "00" * 32)
    with pytest.raises(Forbidden) as err:
        plan([delta("a")], head, principal="user:mallory")
    assert err.value.details == {"run_id": "run-1"}
    # A stream that does not exist yet has no owner to protect: the writer becomes it.
    assert plan([delta("a")], new_head(), principal="user:bob").new_events[0].principal == "user:bob"


def test_a_forbidden_caller_learns_nothing_from_a_replay() -> None:
    first = plan([delta("a", "k")]).new_events[0]
    head = StreamHead("run", "run-1", ALICE, "created", 1, first.hash)
    with pytest.raises(Forbidden):
        plan([delta("a", "k")], head, {"k": first}, principal="user:mallory")


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (AppendRequest("run.finished", {"status": "succeeded"}), None),
        (AppendRequest("text.delta", {"x": float("nan")}), InvalidRequest),
        (AppendRequest("text.delta", {"x": 2**70}), InvalidRequest),
        (delta("a", expected=99), SeqMismatch),
    ],
)
def test_batch_is_atomic_and_names_the_failing_index(
    bad: AppendRequest, error: type[Exception] | None
) -> None:
    # After run.finished, the next event is refused: the third request fails every time.
    reqs = [AppendRequest("run.started", {}), bad, delta("after")]
    if error is None:
        error, index = InvalidTransition, 2
    else:
        reqs, index = [AppendRequest("run.started", {}), bad], 1
    with pytest.raises(error) as err:
        plan(reqs)
    assert err.value.details["index"] == index  # type: ignore[attr-defined]
    assert "the batch wrote nothing" in str(err.value)


def test_single_request_errors_carry_no_index() -> None:
    with pytest.raises(SeqMismatch) as err:
        plan([delta("a", expected=3)])
    assert "index" not in err.value.details


def test_inputs_are_not_mutated() -> None:
    first = plan([delta("a", "k1")]).new_events[0]
    stored = {"k1": first}
    head = StreamHead("run", "run-1", ALICE, "created", 1, first.hash)
    plan([delta("a", "k1"), delta("b", "k2")], head, stored)
    assert stored == {"k1": first} and head.last_seq == 1


ops = st.lists(
    st.tuples(
        st.sampled_from(["text.delta", "run.delta", "run.started"]),
        st.dictionaries(st.text(max_size=3), st.integers(-5, 5) | st.text(max_size=3), max_size=3),
        st.none() | st.sampled_from(["k1", "k2", "k3"]),
    ),
    max_size=25,
)


@given(ops)
def test_any_accepted_batch_is_gap_free_and_chained(
    requests: list[tuple[str, dict[str, Any], str | None]],
) -> None:
    reqs = [AppendRequest(t, p, k) for t, p, k in requests]
    try:
        p = plan(reqs)
    except IdempotencyConflict:
        return
    assert [e.seq for e in p.new_events] == list(range(1, len(p.new_events) + 1))
    prev = None
    for ev in p.new_events:
        assert ev.prev_hash == prev
        assert ev.hash == formula("run-1", ev.seq, ev.event_type, json.loads(ev.payload_json), prev)
        prev = ev.hash
    keys = [e.idempotency_key for e in p.new_events if e.idempotency_key is not None]
    assert len(keys) == len(set(keys))
    assert len(p.outcomes) == len(reqs)
