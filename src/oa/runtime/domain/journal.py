"""Planning appends to an event stream: seq, hash chain, idempotency, state machine.

`plan_command` is the whole decision for one append command, as a pure function of the
stream's head and the events already stored under the command's idempotency keys. The
adapter only locks, loads those inputs, and writes what the plan says. That keeps every
rule testable without a database and makes a group commit of many commands safe: each
command is planned against the head the previous one left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from oa.canonical import NotCanonicalizable, canonical_json, event_hash, sha256_hex
from oa.exceptions import Forbidden, IdempotencyConflict, InvalidRequest, OAError, SeqMismatch


@dataclass(frozen=True)
class AppendRequest:
    event_type: str
    payload: dict[str, Any]
    idempotency_key: str | None = None
    expected_previous_seq: int | None = None


@dataclass(frozen=True)
class StreamHead:
    """Where a stream stands. `exists=False` is a stream this command would create."""

    kind: str
    stream_id: str
    owner: str
    status: str
    last_seq: int = 0
    last_hash: str | None = None
    exists: bool = True


@dataclass(frozen=True)
class Event:
    """One event as stored. `position` is 0 until the writer allocates it at commit."""

    kind: str
    stream_id: str
    seq: int
    event_type: str
    payload_json: bytes
    payload_hash: str
    prev_hash: str | None
    hash: str
    principal: str
    idempotency_key: str | None = None
    position: int = 0
    recorded_at: str = ""


@dataclass(frozen=True)
class Outcome:
    """What happened to one request: a new event, a replay of a stored one, or a no-op."""

    result: Literal["appended", "replayed", "noop"]
    event: Event | None
    status: str
    last_seq: int


@dataclass(frozen=True)
class Plan:
    head: StreamHead
    outcomes: list[Outcome]
    new_events: list[Event] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.new_events)


# (current status, event type, payload) -> (next status, is a no-op)
TransitionFn = Callable[[str, str, dict[str, Any]], tuple[str, bool]]


def encode_payload(payload: dict[str, Any]) -> tuple[bytes, str]:
    try:
        data = canonical_json(payload)
    except NotCanonicalizable as exc:
        raise InvalidRequest(
            f"payload has no canonical JSON form ({exc}); use finite numbers, "
            "integers within 64 bits and string keys",
            {"field": "payload"},
        ) from None
    return data, sha256_hex(data)


def plan_command(
    head: StreamHead,
    principal: str,
    requests: Sequence[AppendRequest],
    stored_by_key: Mapping[str, Event],
    transition: TransitionFn,
) -> Plan:
    """Plan one atomic command; raise the first error (the command then writes nothing)."""
    if head.exists and head.owner != principal:
        raise Forbidden(
            f"{head.kind} {head.stream_id!r} belongs to another principal; sign the request as its owner",
            {head.kind + "_id": head.stream_id},
        )
    state = head
    outcomes: list[Outcome] = []
    new_events: list[Event] = []
    seen: dict[str, Event] = dict(stored_by_key)
    for index, req in enumerate(requests):
        try:
            payload_json, p_hash = encode_payload(req.payload)
            if req.idempotency_key is not None and req.idempotency_key in seen:
                prior = seen[req.idempotency_key]
                if prior.event_type != req.event_type or prior.payload_hash != p_hash:
                    raise IdempotencyConflict(
                        f"idempotency_key {req.idempotency_key!r} was already used for a "
                        f"different event (seq {prior.seq}); use a new key for a new event",
                        {"idempotency_key": req.idempotency_key, "seq": prior.seq},
                    )
                outcomes.append(Outcome("replayed", prior, state.status, state.last_seq))
                continue
            if req.expected_previous_seq is not None and req.expected_previous_seq != state.last_seq:
                raise SeqMismatch(
                    f"expected_previous_seq is {req.expected_previous_seq} but the "
                    f"{head.kind}'s last seq is {state.last_seq}; re-read the stream and retry",
                    {"expected_previous_seq": req.expected_previous_seq, "last_seq": state.last_seq},
                )
            status, noop = transition(state.status, req.event_type, req.payload)
            if noop:
                outcomes.append(Outcome("noop", None, state.status, state.last_seq))
                continue
            seq = state.last_seq + 1
            event = Event(
                kind=head.kind,
                stream_id=head.stream_id,
                seq=seq,
                event_type=req.event_type,
                payload_json=payload_json,
                payload_hash=p_hash,
                prev_hash=state.last_hash,
                hash=event_hash(head.stream_id, seq, req.event_type, p_hash, state.last_hash),
                principal=principal,
                idempotency_key=req.idempotency_key,
            )
            new_events.append(event)
            if req.idempotency_key is not None:
                seen[req.idempotency_key] = event
            state = replace(state, status=status, last_seq=seq, last_hash=event.hash)
            outcomes.append(Outcome("appended", event, status, seq))
        except OAError as exc:
            if len(requests) > 1:
                exc.details.setdefault("index", index)
                exc.message = f"event {index}: {exc.message} (the batch wrote nothing)"
                exc.args = (exc.message,)
            raise
    return Plan(head=state, outcomes=outcomes, new_events=new_events)
