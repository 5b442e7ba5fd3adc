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
    org: str | None = None  # fixed by the stream's first *.started event that names one


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

ORG_FIELD = "org_id"
STARTED_EVENTS = frozenset({"run.started", "worker.started"})


def org_of_request(
    head: StreamHead, req: AppendRequest, signed_org: str | None
) -> tuple[AppendRequest, str | None]:
    """Check a request's org against the caller's signature and the stream; stamp it.

    The org of a run or worker comes from the caller signature (`oa.runtime.signing`), never
    from a payload: a payload `org_id` must equal the signature's org; a `*.started`
    event without one gets the signature's org written into it (so the projections, which
    fold stored events only, read an org the runtime vouched for); and once a stream has
    an org, an event naming another one is refused. Returns the request as it will be
    stored and the org it names (None: none).
    """
    claimed = req.payload.get(ORG_FIELD)
    if claimed == "":
        claimed = None  # proto3: the empty string is "not set"
    if claimed is not None and claimed != signed_org:
        why = (
            f"the caller signature acts for org {signed_org!r}"
            if signed_org is not None
            else "the caller signature carries no org"
        )
        raise Forbidden(
            f"payload org_id {claimed!r} is refused: {why}. The org comes from the signature; "
            f"sign as a member of {claimed!r} (oa token runtime --user ID --org {claimed}) or omit org_id",
            {"org_id": claimed, "signature_org": signed_org},
        )
    org = claimed
    if req.event_type in STARTED_EVENTS and signed_org is not None:
        org = signed_org
        if req.payload.get(ORG_FIELD) != signed_org:
            req = replace(req, payload={**req.payload, ORG_FIELD: signed_org})
    if org is not None and head.org is not None and org != head.org:
        raise Forbidden(
            f"{head.kind} {head.stream_id!r} belongs to org {head.org!r}, not {org!r}: "
            f"its org is fixed by its first {head.kind}.started",
            {"org_id": org, f"{head.kind}_org": head.org},
        )
    return req, org


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
    signed_org: str | None = None,
) -> Plan:
    """Plan one atomic command; raise the first error (the command then writes nothing).

    `signed_org` is the org the caller's signature vouches for (see `org_of_request`)."""
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
            req, org = org_of_request(state, req, signed_org)
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
            if req.event_type in STARTED_EVENTS and state.org is None and org is not None:
                state = replace(state, org=org)
            state = replace(state, status=status, last_seq=seq, last_hash=event.hash)
            outcomes.append(Outcome("appended", event, status, seq))
        except OAError as exc:
            if len(requests) > 1:
                exc.details.setdefault("index", index)
                exc.message = f"event {index}: {exc.message} (the batch wrote nothing)"
                exc.args = (exc.message,)
            raise
    return Plan(head=state, outcomes=outcomes, new_events=new_events)
