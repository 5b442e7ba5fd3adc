"""The Codex worker transition table and heartbeat state, exhaustively, without I/O."""

from __future__ import annotations

import itertools

import pytest

from oa.exceptions import InvalidRequest, InvalidTransition
from oa.runtime.domain.workers import (
    TRANSITIONS,
    WorkerStatus,
    executor_lost,
    heartbeat_state,
    next_status,
    stop_path,
)

S = WorkerStatus
LEGAL = {
    (S.STARTING, S.RUNNING), (S.STARTING, S.STOPPING), (S.STARTING, S.FAILED),
    (S.RUNNING, S.STOPPING), (S.RUNNING, S.STOPPED), (S.RUNNING, S.FAILED),
    (S.STOPPING, S.STOPPED), (S.STOPPING, S.FAILED),
    (S.STOPPED, S.STARTING), (S.STOPPED, S.RUNNING),
    (S.FAILED, S.STARTING), (S.FAILED, S.RUNNING),
}  # fmt: skip


def _event_for(target: WorkerStatus) -> tuple[str, dict[str, object]]:
    if target in (S.STARTING, S.RUNNING):
        return "worker.started", {"status": target.value}
    if target in (S.STOPPING, S.STOPPED):
        return "worker.stopped", {"status": target.value}
    return "worker.error", {"fatal": True, "code": "boom"}


def test_table_matches_the_design() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_pair(current: WorkerStatus, target: WorkerStatus) -> None:
    event_type, payload = _event_for(target)
    if current is target:
        assert next_status(current, event_type, payload) == (current, True)
    elif (current, target) in LEGAL:
        assert next_status(current, event_type, payload) == (target, False)
    else:
        with pytest.raises(InvalidTransition) as err:
            next_status(current, event_type, payload)
        allowed = err.value.details["allowed"]
        assert set(allowed) == {s.value for s in TRANSITIONS[current]}
        for name in allowed:
            assert name in err.value.message


def test_status_neutral_events_only_while_live() -> None:
    for status in (S.STARTING, S.RUNNING, S.STOPPING):
        assert next_status(status, "worker.heartbeat", {}) == (status, False)
        assert next_status(status, "worker.error", {"fatal": False}) == (status, False)
    for status in (S.STOPPED, S.FAILED):
        with pytest.raises(InvalidTransition, match="reattach"):
            next_status(status, "worker.heartbeat", {})


def test_bad_event_types_and_statuses() -> None:
    with pytest.raises(InvalidRequest, match=r"start with 'worker\.'"):
        next_status(S.RUNNING, "run.started", {})
    with pytest.raises(InvalidRequest, match="starting or running"):
        next_status(S.STOPPED, "worker.started", {"status": "stopped"})
    with pytest.raises(InvalidRequest, match="fatal"):
        next_status(S.RUNNING, "worker.error", {"status": "failed"})


def test_stop_path() -> None:
    assert stop_path(S.STARTING) == [S.STOPPING, S.STOPPED]
    assert stop_path(S.RUNNING) == [S.STOPPED]
    assert stop_path(S.STOPPING) == [S.STOPPED]
    assert stop_path(S.STOPPED) == []
    with pytest.raises(InvalidTransition):
        stop_path(S.FAILED)


def test_heartbeat_state_is_computed_from_age() -> None:
    assert heartbeat_state(S.RUNNING, None, 120_000) == "missing"
    assert heartbeat_state(S.RUNNING, 1_000, 120_000) == "fresh"
    assert heartbeat_state(S.RUNNING, 120_000, 120_000) == "fresh"
    assert heartbeat_state(S.RUNNING, 120_001, 120_000) == "stale"
    assert heartbeat_state(S.STOPPED, 1, 120_000) == "stopped"
    assert heartbeat_state(S.FAILED, None, 120_000) == "failed"
    assert executor_lost(S.RUNNING, 301_000, 300_000)
    assert not executor_lost(S.RUNNING, 299_000, 300_000)
    assert not executor_lost(S.STOPPED, 10**9, 300_000)
