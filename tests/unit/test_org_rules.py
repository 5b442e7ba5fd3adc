"""The org rules as pure functions: the signature decides, the first *.started fixes it,
and the folds read an org from *.started events only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oa.canonical import canonical_json, sha256_hex
from oa.exceptions import Forbidden
from oa.runtime.domain.journal import AppendRequest, Event, StreamHead, plan_command
from oa.runtime.projector.projections import BY_NAME
from oa.runtime.service.runs import run_transition
from oa.runtime.signing import Caller, sign_caller, verify_caller

ALICE = "user:alice"


def _plan(requests: list[AppendRequest], org: str | None, head: StreamHead | None = None) -> StreamHead:
    head = head or StreamHead("run", "run-1", ALICE, "created", exists=False)
    return plan_command(head, ALICE, requests, {}, run_transition, org).head


def test_the_signature_carries_the_org() -> None:
    secret = b"s" * 32
    assert verify_caller(secret, sign_caller(secret, ALICE, org="org_a")) == Caller(ALICE, "org_a")
    assert verify_caller(secret, sign_caller(secret, ALICE)) == Caller(ALICE, None)


def test_stamped_started_event_and_fixed_org() -> None:
    head = StreamHead("run", "run-1", ALICE, "created", exists=False)
    plan = plan_command(
        head, ALICE, [AppendRequest("run.started", {"model": "m"})], {}, run_transition, "org_a"
    )
    assert json.loads(plan.new_events[0].payload_json) == {"model": "m", "org_id": "org_a"}
    assert plan.head.org == "org_a"
    # A signature without an org stamps nothing and fixes nothing.
    assert _plan([AppendRequest("run.started", {})], None).org is None


@pytest.mark.parametrize(
    ("payload_org", "signed", "head_org"),
    [("org_a", "org_b", None), ("org_a", None, None), ("org_a", "org_a", "org_b"), (None, "org_a", "org_b")],
)
def test_a_foreign_org_is_forbidden(
    payload_org: str | None, signed: str | None, head_org: str | None
) -> None:
    head = StreamHead("run", "run-1", ALICE, "created", 0, None, exists=head_org is not None, org=head_org)
    payload = {"org_id": payload_org} if payload_org else {}
    with pytest.raises(Forbidden):
        _plan([AppendRequest("run.started", payload)], signed, head)


def _event(kind: str, event_type: str, payload: dict[str, Any], seq: int) -> Event:
    body = canonical_json(payload)
    return Event(kind, "s-1", seq, event_type, body, sha256_hex(body), None, "h", ALICE)


@pytest.mark.parametrize("projection", ["codex_worker_summaries", "codex_worker_events"])
def test_worker_folds_take_the_org_from_worker_started_only(projection: str) -> None:
    p = BY_NAME[projection]
    doc = p.fold(None, _event("worker", "worker.started", {"status": "running"}, 1), {"status": "running"})
    forged = {"status": "running", "org_id": "org_x"}  # what a stored non-started event might say
    doc = p.fold(doc, _event("worker", "worker.heartbeat", forged, 2), forged)
    assert doc is not None and doc["org_id"] is None


def test_the_run_summary_keeps_the_org_of_its_first_run_started() -> None:
    p = BY_NAME["run_summaries"]
    first = {"org_id": "org_a"}
    doc = p.fold(None, _event("run", "run.started", first, 1), first)
    later = {"org_id": "org_x"}
    doc = p.fold(doc, _event("run", "run.started", later, 2), later)
    assert doc is not None and doc["org_id"] == "org_a"
