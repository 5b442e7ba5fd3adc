"""The run state machine, cell by cell, against DESIGN.md's runtime contract.

    created→running (run.started; a repeat while running is a no-op)
    created|running→canceling (run.cancel_requested)
    run.finished{status} → succeeded|failed|canceled (the same terminal repeat is a no-op)
    canceling → failed|canceled only; anything else → 409 invalid transition

One decision goes past the contract on purpose: a cancel request on a run that is already
canceling or finished is a no-op, not a 409, because `POST runs/{id}/cancel` is idempotent
(a client retrying a cancel must not get an error for a cancel that already won).
"""

from __future__ import annotations

import itertools

import pytest

from oa.exceptions import InvalidRequest, InvalidTransition
from oa.runtime.domain.runs import RunStatus, Transition, next_status

S = RunStatus
NOOP = "noop"
REFUSED = "409"

# (from, event) -> to, NOOP or REFUSED. "finished:X" is run.finished{status: X};
# "other" is any non-lifecycle event (text.delta here).
TABLE: dict[tuple[RunStatus, str], RunStatus | str] = {
    (S.CREATED, "run.started"): S.RUNNING,
    (S.RUNNING, "run.started"): NOOP,
    (S.CANCELING, "run.started"): REFUSED,
    (S.SUCCEEDED, "run.started"): REFUSED,
    (S.FAILED, "run.started"): REFUSED,
    (S.CANCELED, "run.started"): REFUSED,
    (S.CREATED, "run.cancel_requested"): S.CANCELING,
    (S.RUNNING, "run.cancel_requested"): S.CANCELING,
    (S.CANCELING, "run.cancel_requested"): NOOP,
    (S.SUCCEEDED, "run.cancel_requested"): NOOP,
    (S.FAILED, "run.cancel_requested"): NOOP,
    (S.CANCELED, "run.cancel_requested"): NOOP,
    (S.CREATED, "finished:succeeded"): S.SUCCEEDED,
    (S.CREATED, "finished:failed"): S.FAILED,
    (S.CREATED, "finished:canceled"): S.CANCELED,
    (S.RUNNING, "finished:succeeded"): S.SUCCEEDED,
    (S.RUNNING, "finished:failed"): S.FAILED,
    (S.RUNNING, "finished:canceled"): S.CANCELED,
    (S.CANCELING, "finished:succeeded"): REFUSED,
    (S.CANCELING, "finished:failed"): S.FAILED,
    (S.CANCELING, "finished:canceled"): S.CANCELED,
    (S.SUCCEEDED, "finished:succeeded"): NOOP,
    (S.SUCCEEDED, "finished:failed"): REFUSED,
    (S.SUCCEEDED, "finished:canceled"): REFUSED,
    (S.FAILED, "finished:failed"): NOOP,
    (S.FAILED, "finished:succeeded"): REFUSED,
    (S.FAILED, "finished:canceled"): REFUSED,
    (S.CANCELED, "finished:canceled"): NOOP,
    (S.CANCELED, "finished:succeeded"): REFUSED,
    (S.CANCELED, "finished:failed"): REFUSED,
    (S.CREATED, "other"): S.CREATED,
    (S.RUNNING, "other"): S.RUNNING,
    (S.CANCELING, "other"): S.CANCELING,
    (S.SUCCEEDED, "other"): REFUSED,
    (S.FAILED, "other"): REFUSED,
    (S.CANCELED, "other"): REFUSED,
}
EVENTS = ["run.started", "run.cancel_requested", "finished:succeeded", "finished:failed", "finished:canceled"]


def _apply(current: RunStatus, event: str) -> Transition:
    if event.startswith("finished:"):
        return next_status(current, "run.finished", {"status": event.split(":", 1)[1]})
    if event == "other":
        return next_status(current, "text.delta", {"text": "x"})
    return next_status(current, event, {})


def test_table_covers_every_status_and_event() -> None:
    assert set(TABLE) == set(itertools.product(RunStatus, [*EVENTS, "other"]))


@pytest.mark.parametrize(("current", "event"), sorted(TABLE, key=str))
def test_transition(current: RunStatus, event: str) -> None:
    expected = TABLE[(current, event)]
    if expected == REFUSED:
        with pytest.raises(InvalidTransition) as err:
            _apply(current, event)
        assert err.value.status == 409 and err.value.code == "conflict"
        assert err.value.details["status"] == current.value
        assert "invalid transition" in err.value.message
    elif expected == NOOP:
        assert _apply(current, event) == Transition(current, noop=True)
    else:
        assert _apply(current, event) == Transition(RunStatus(expected), noop=False)


@pytest.mark.parametrize("status", [None, "", "running", "SUCCEEDED", "done", 1])
def test_finished_needs_a_terminal_status(status: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        next_status(S.RUNNING, "run.finished", {"status": status})
    assert err.value.details["field"] == "payload.status"


def test_late_result_cannot_reopen_a_canceled_run() -> None:
    for event in ["run.started", "finished:succeeded", "other"]:
        with pytest.raises(InvalidTransition):
            _apply(S.CANCELED, event)


def test_terminal_flags() -> None:
    assert {s for s in RunStatus if s.terminal} == {S.SUCCEEDED, S.FAILED, S.CANCELED}
