"""The policy evaluator and the reservation state machine, as pure functions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from oa.exceptions import IdempotencyConflict, InvalidRequest, InvalidTransition
from oa.runtime.domain.policy import REASON_CODES, Authorization, DecisionInputs, decision_events, evaluate
from oa.runtime.domain.schemas import validate_payload
from oa.runtime.domain.spend import ReservationState, reservation_id, settle

NOW = datetime(2026, 1, 2, 12, tzinfo=UTC)
AUTH = Authorization(
    authorization_id="a1", owner="user:alice", mode="delegated_budget", max_total_sats=1000,
    max_per_call_sats=300, max_per_day_sats=600, threshold_sats=None, allowed_tools=("pay", "fetch"),
    spent_sats=0, reserved_sats=0, day=date(2026, 1, 2), day_used_sats=0, expires_at=None, revoked=False,
)  # fmt: skip


def inputs(amount: int = 100, tool: str = "pay", tc: str = "tc1") -> DecisionInputs:
    return DecisionInputs("run1", tc, tool, amount, "a1")


@pytest.mark.parametrize(
    ("auth", "inp", "reason"),
    [
        (AUTH, inputs(), "policy_allowed"),
        (replace(AUTH, revoked=True), inputs(), "authorization_revoked"),
        (replace(AUTH, expires_at=NOW - timedelta(seconds=1)), inputs(), "authorization_expired"),
        (replace(AUTH, mode="deny"), inputs(), "authorization_deny_mode"),
        (AUTH, inputs(tool="rm"), "tool_not_allowed"),
        (replace(AUTH, mode="interactive"), inputs(), "interactive_approval_required"),
        (replace(AUTH, mode="interactive"), inputs(amount=0), "policy_allowed"),
        (
            replace(AUTH, mode="delegated_budget_with_threshold", threshold_sats=50),
            inputs(),
            "interactive_approval_required",
        ),
        (AUTH, inputs(amount=301), "per_call_limit_exceeded"),
        (replace(AUTH, day_used_sats=550), inputs(), "daily_limit_exceeded"),
        (replace(AUTH, spent_sats=800, reserved_sats=150), inputs(), "budget_exhausted"),
        (replace(AUTH, spent_sats=800, reserved_sats=100), inputs(), "policy_allowed"),  # exactly the max
    ],
)
def test_reasons(auth: Authorization, inp: DecisionInputs, reason: str) -> None:
    d = evaluate(inp, auth, True, NOW)
    assert d.reason == reason and d.allow == (reason == "policy_allowed")
    assert d.reason_code == REASON_CODES[reason] and d.reason_code.startswith("REASON_CODE_")


def test_daily_counter_rolls_over() -> None:
    yesterday = replace(AUTH, day=date(2026, 1, 1), day_used_sats=600)
    assert evaluate(inputs(), yesterday, True, NOW).reason == "daily_limit_exceeded"
    assert evaluate(inputs(), yesterday.on(date(2026, 1, 2)), True, NOW).allow


def test_run_not_active_and_no_authorization() -> None:
    assert evaluate(inputs(), AUTH, False, NOW).reason == "run_not_active"
    free = DecisionInputs("run1", "tc1", "search", 0, None)
    assert evaluate(free, None, True, NOW).allow


def test_decision_id_is_a_function_of_the_inputs() -> None:
    assert inputs().decision_id() == inputs().decision_id()
    ids = {inputs().decision_id(), inputs(amount=101).decision_id(), inputs(tool="fetch").decision_id(),
           inputs(tc="tc2").decision_id(), DecisionInputs("run2", "tc1", "pay", 100, "a1").decision_id()}  # fmt: skip
    assert len(ids) == 5
    # ...and not of the budget: a different standing still names the same question.
    a = evaluate(inputs(), AUTH, True, NOW)
    b = evaluate(inputs(), replace(AUTH, spent_sats=950), True, NOW)
    assert a.decision_id == b.decision_id and a.allow != b.allow


def test_decision_events_match_the_proto() -> None:
    d = evaluate(inputs(), replace(AUTH, spent_sats=990), True, NOW)
    events = decision_events(d, inputs(), None)
    assert [t for t, _ in events] == ["policy.decision", "policy.budget_exhausted"]
    for t, payload in events:
        validate_payload(t, payload)
    allowed = decision_events(evaluate(inputs(), AUTH, True, NOW), inputs(), "rsv_1")
    assert [t for t, _ in allowed] == ["policy.decision"] and allowed[0][1]["reservation_id"] == "rsv_1"


R = ReservationState


def test_settle_commit_release_and_their_409s() -> None:
    c = settle(R.RESERVED, 100, None, "commit", 70)
    assert (c.state, c.committed_sats, c.spent_delta, c.reserved_delta, c.day_delta) == (
        R.COMMITTED,
        70,
        70,
        -100,
        -30,
    )
    r = settle(R.RESERVED, 100, None, "release", None)
    assert (r.state, r.spent_delta, r.reserved_delta, r.day_delta) == (R.RELEASED, 0, -100, -100)
    assert settle(R.COMMITTED, 100, 70, "commit", None).replay
    assert settle(R.COMMITTED, 100, 70, "commit", 70).replay
    assert settle(R.RELEASED, 100, None, "release", None).replay
    with pytest.raises(IdempotencyConflict):
        settle(R.COMMITTED, 100, 70, "commit", 80)
    with pytest.raises(InvalidTransition, match="committed reservation cannot be released"):
        settle(R.COMMITTED, 100, 70, "release", None)
    with pytest.raises(InvalidTransition, match="released reservation cannot be committed"):
        settle(R.RELEASED, 100, None, "commit", None)
    with pytest.raises(InvalidTransition, match="reconcil"):
        settle(R.RECONCILE_REQUIRED, 100, None, "commit", None)
    with pytest.raises(InvalidRequest):
        settle(R.RESERVED, 100, None, "commit", 101)
    assert settle(R.RECONCILE_REQUIRED, 100, None, "commit", None, resolving=True).state is R.COMMITTED
    with pytest.raises(InvalidTransition):
        settle(R.RESERVED, 100, None, "release", None, resolving=True)


def test_reservation_id_is_stable_and_unambiguous() -> None:
    assert reservation_id("a", "r", "t") == reservation_id("a", "r", "t")
    assert reservation_id("a|r", "", "t") != reservation_id("a", "r|", "t")
