"""The Codex worker state machine and heartbeat state, as pure functions.

    starting ──▶ running | stopping | failed
    running  ──▶ stopping | stopped | failed
    stopping ──▶ stopped | failed
    stopped | failed ──▶ starting | running      (reattach)
    any status ──▶ itself                        (a no-op: nothing is appended)

Which event moves where: `worker.started` to its payload's `status` (starting or running,
default running), `worker.stopped` to its `status` (stopping or stopped, default stopped),
a `fatal` `worker.error` to failed. Every other `worker.*` event leaves the status alone and
is accepted only while the worker is live (starting, running, stopping): a stopped or
failed worker must be reattached before it reports again.

Heartbeat state is derived at read time from the last heartbeat's age, so it can never be
out of date the way a stored "stale" flag would be.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from oa.exceptions import InvalidRequest, InvalidTransition


class WorkerStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


S = WorkerStatus
TRANSITIONS: dict[WorkerStatus, frozenset[WorkerStatus]] = {
    S.STARTING: frozenset({S.RUNNING, S.STOPPING, S.FAILED}),
    S.RUNNING: frozenset({S.STOPPING, S.STOPPED, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.STOPPED: frozenset({S.STARTING, S.RUNNING}),
    S.FAILED: frozenset({S.STARTING, S.RUNNING}),
}
LIVE = frozenset({S.STARTING, S.RUNNING, S.STOPPING})
WORKER_EVENT_TYPES = (
    "worker.started",
    "worker.request.received",
    "worker.response",
    "worker.error",
    "worker.event",
    "worker.heartbeat",
    "worker.stopped",
)
_TARGETS = {
    "worker.started": (S.RUNNING, (S.STARTING, S.RUNNING)),
    "worker.stopped": (S.STOPPED, (S.STOPPING, S.STOPPED)),
}
DEFAULT_STALE_AFTER_MS = 120_000


def allowed_next(current: WorkerStatus) -> list[str]:
    """The statuses `current` may move to, in table order (for error messages)."""
    return [s.value for s in WorkerStatus if s in TRANSITIONS[current]]


def target_status(event_type: str, payload: dict[str, Any]) -> WorkerStatus | None:
    """The status an event asks for, or None for events that do not change it."""
    if not event_type.startswith("worker."):
        raise InvalidRequest(
            f"event_type {event_type!r} is not a worker event; worker events start with 'worker.' "
            f"({', '.join(WORKER_EVENT_TYPES)})",
            {"field": "event_type", "allowed": list(WORKER_EVENT_TYPES)},
        )
    if event_type in _TARGETS:
        default, allowed = _TARGETS[event_type]
        raw = payload.get("status", default.value)
        if raw not in [s.value for s in allowed]:
            raise InvalidRequest(
                f"{event_type} takes payload.status {' or '.join(s.value for s in allowed)}, got {raw!r}",
                {"field": "payload.status", "allowed": [s.value for s in allowed]},
            )
        return WorkerStatus(raw)
    if event_type == "worker.error":
        fatal = payload.get("fatal") is True
        status = payload.get("status")
        if status not in (None, "", "failed") or (status == "failed" and not fatal):
            raise InvalidRequest(
                "worker.error sets no status itself: send fatal=true to fail the worker "
                "(payload.status may only be 'failed', alongside fatal=true)",
                {"field": "payload.status"},
            )
        return S.FAILED if fatal else None
    return None


def next_status(current: WorkerStatus, event_type: str, payload: dict[str, Any]) -> tuple[WorkerStatus, bool]:
    """(status after the event, whether the event is a no-op). Raises on illegal moves."""
    target = target_status(event_type, payload)
    if target is None:
        if current not in LIVE:
            raise InvalidTransition(
                f"invalid transition: {event_type} on a {current.value} worker; reattach it first "
                f"(a {current.value} worker may move to {' or '.join(allowed_next(current))})",
                {"status": current.value, "event_type": event_type, "allowed": allowed_next(current)},
            )
        return current, False
    if target is current:
        return current, True
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(
            f"invalid transition: a {current.value} worker cannot become {target.value}; "
            f"allowed from {current.value}: {', '.join(allowed_next(current))}",
            {
                "status": current.value,
                "target_status": target.value,
                "event_type": event_type,
                "allowed": allowed_next(current),
            },
        )
    return target, False


def stop_path(current: WorkerStatus) -> list[WorkerStatus]:
    """The statuses a stop request walks through to reach stopped (empty: already there).

    A starting worker cannot jump to stopped, so a stop goes through stopping first.
    """
    if current is S.STOPPED:
        return []
    if current is S.STARTING:
        return [S.STOPPING, S.STOPPED]
    if S.STOPPED in TRANSITIONS[current]:
        return [S.STOPPED]
    next_status(current, "worker.stopped", {"status": "stopped"})  # raises the 409
    return []  # pragma: no cover


def heartbeat_state(status: WorkerStatus, age_ms: int | None, stale_after_ms: int) -> str:
    """`stopped`/`failed` by status, else `missing` (never beat), `stale` or `fresh`."""
    if status in (S.STOPPED, S.FAILED):
        return status.value
    if age_ms is None:
        return "missing"
    return "stale" if age_ms > stale_after_ms else "fresh"


def executor_lost(status: WorkerStatus, age_ms: int | None, lost_after_ms: int) -> bool:
    """Whether a live worker's executor should be declared gone.

    `age_ms` is the age of the last heartbeat, or of the worker itself if it never beat.
    """
    return status in LIVE and age_ms is not None and age_ms > lost_after_ms
