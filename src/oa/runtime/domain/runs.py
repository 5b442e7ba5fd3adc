"""The run state machine.

    created ──run.started──▶ running
    created|running ──run.cancel_requested──▶ canceling
    created|running ──run.finished{status}──▶ succeeded|failed|canceled
    canceling ──run.finished{failed|canceled}──▶ failed|canceled

A repeat that would not change anything (run.started while running, the same terminal
status again, a second cancel request) is a no-op: nothing is appended. Anything else that
names a lifecycle transition the table lacks is an `InvalidTransition`. Other events may be
appended while the run is not terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from oa.exceptions import InvalidRequest, InvalidTransition


class RunStatus(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    CANCELING = "canceling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED})
FINISH_STATUSES = ("succeeded", "failed", "canceled")


@dataclass(frozen=True)
class Transition:
    """The status after an event, and whether the event should be skipped as a no-op."""

    status: RunStatus
    noop: bool = False


def next_status(current: RunStatus, event_type: str, payload: dict[str, Any]) -> Transition:
    if event_type == "run.started":
        if current is RunStatus.CREATED:
            return Transition(RunStatus.RUNNING)
        if current is RunStatus.RUNNING:
            return Transition(current, noop=True)
        raise _refuse(current, event_type, "run.started is allowed from created (or repeated while running)")

    if event_type == "run.cancel_requested":
        if current in (RunStatus.CREATED, RunStatus.RUNNING):
            return Transition(RunStatus.CANCELING)
        if current is RunStatus.CANCELING or current.terminal:
            return Transition(current, noop=True)

    if event_type == "run.finished":
        status = payload.get("status")
        if status not in FINISH_STATUSES:
            raise InvalidRequest(
                f"run.finished needs payload.status, one of {', '.join(FINISH_STATUSES)}; got {status!r}",
                {"field": "payload.status", "allowed": list(FINISH_STATUSES)},
            )
        target = RunStatus(status)
        if current is target:
            return Transition(current, noop=True)
        if current in (RunStatus.CREATED, RunStatus.RUNNING):
            return Transition(target)
        if current is RunStatus.CANCELING and target in (RunStatus.FAILED, RunStatus.CANCELED):
            return Transition(target)
        raise _refuse(
            current,
            event_type,
            "a canceling run may only finish as failed or canceled"
            if current is RunStatus.CANCELING
            else "the run already finished; a late result cannot reopen it",
            target=status,
        )

    if current.terminal:
        raise _refuse(current, event_type, "the run is finished and takes no more events")
    return Transition(current)


def _refuse(current: RunStatus, event_type: str, why: str, target: str | None = None) -> InvalidTransition:
    details: dict[str, Any] = {"status": current.value, "event_type": event_type}
    if target is not None:
        details["target_status"] = target
    return InvalidTransition(f"invalid transition: {event_type} on a {current.value} run ({why})", details)
