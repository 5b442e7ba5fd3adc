"""Projections: pure, deterministic folds of runtime events into Khala documents.

A projection names the documents an event touches and folds the event into each one.
Nothing here reads a clock or a database: the same events always give byte-identical
documents, which is what makes a drop-and-rebuild (invariant 2) and an audit possible.
Timestamps come from the events (`recorded_at`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from oa.catalog import PROJECTIONS as DECLARED
from oa.catalog import ProjectionDecl
from oa.runtime.domain.journal import Event
from oa.runtime.domain.runs import RunStatus, next_status
from oa.runtime.domain.workers import WorkerStatus, target_status
from oa.runtime.domain.workers import next_status as worker_next_status

Doc = dict[str, Any]


Ids = Callable[[Event], list[str]]
Fold = Callable[[Doc | None, Event, dict[str, Any]], Doc | None]


@dataclass(frozen=True)
class Projection:
    """A declared projection (proto/oa/sync/v1/catalog.proto) with its fold.

    `ids` names the documents an event touches by id only; the key is always the declared
    prefix + id, so a projection cannot write outside its topic's prefixes."""

    decl: ProjectionDecl
    ids: Ids
    fold: Fold

    @property
    def name(self) -> str:
        return self.decl.name

    @property
    def topic(self) -> str:
        return self.decl.topic

    @property
    def version(self) -> int:
        return self.decl.version

    @property
    def doc_prefix(self) -> str:
        return self.decl.doc_prefix

    def keys(self, ev: Event) -> list[str]:
        return [self.decl.doc_prefix + i for i in self.ids(ev)]


def owner_of(principal: str) -> str:
    """`user:alice` -> `alice`; other principals keep their full name."""
    return principal[5:] if principal.startswith("user:") else principal


def _org(payload: dict[str, Any]) -> str | None:
    """The org a `run.started` / `worker.started` payload names.

    Only those events decide a document's org, and the first one that names an org fixes
    it: the runtime checks that org against the caller's signature (or writes the
    signature's org into the event) and refuses a later event naming another one, so the
    org a document shows is one an authority vouched for, never a field of any event.
    """
    org = payload.get("org_id")
    return org if isinstance(org, str) and org else None


# -- run summaries -------------------------------------------------------------------------


def _run_doc(doc: Doc | None, ev: Event, **fresh: Any) -> Doc:
    """The document to fold into: a copy of `doc`, or a new one for the event's run (its
    owner from the principal, no org until an event names one) with the `fresh` fields."""
    if doc:
        return dict(doc)
    return {"run_id": ev.stream_id, "owner": owner_of(ev.principal), "org_id": None, **fresh}


def _run_ids(ev: Event) -> list[str]:
    return [ev.stream_id] if ev.kind == "run" else []


def _fold_run(doc: Doc | None, ev: Event, payload: dict[str, Any]) -> Doc:
    d = _run_doc(
        doc,
        ev,
        status=RunStatus.CREATED.value,
        created_at=ev.recorded_at,
        started_at=None,
        finished_at=None,
        model=None,
        event_count=0,
        text_chars=0,
        tool_calls=0,
        tool_errors=0,
        policy_allowed=0,
        policy_denied=0,
        spend_sats=0,
        budget_exhausted=False,
    )
    t = ev.event_type
    d["status"] = next_status(RunStatus(d["status"]), t, payload).status.value
    d["last_seq"] = ev.seq
    d["last_event_type"] = t
    d["last_event_at"] = ev.recorded_at
    d["event_count"] += 1
    if t == "run.started":
        d["started_at"] = ev.recorded_at
        d["model"] = payload.get("model") or d["model"]
        d["org_id"] = d["org_id"] or _org(payload)
    elif t == "run.finished":
        d["finished_at"] = ev.recorded_at
        d["finish_reason"] = payload.get("reason")
    elif t == "text.delta":
        d["text_chars"] += len(str(payload.get("text", "")))
    elif t == "tool.call":
        d["tool_calls"] += 1
    elif t == "tool.result" and payload.get("ok") is False:
        d["tool_errors"] += 1
    elif t == "policy.decision":
        allowed = payload.get("decision") == "allow"
        d["policy_allowed" if allowed else "policy_denied"] += 1
        budget = payload.get("budget") or {}
        if allowed and isinstance(budget.get("requested_sats"), int):
            d["spend_sats"] += budget["requested_sats"]
    elif t == "policy.budget_exhausted":
        d["budget_exhausted"] = True
    elif t == "run.cancel_requested":
        d["cancel_reason"] = payload.get("reason")
    return d


# -- run timelines (the dashboard's run page) ----------------------------------------------

TIMELINE_EVENTS = 50  # the last N events of a run
TIMELINE_POLICY = 50  # the last N policy decisions of a run
TIMELINE_PAYLOAD_CHARS = 512  # bigger payloads are replaced by their keys


def _brief(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload itself when small, else just its field names (deterministic either way)."""
    if len(orjson.dumps(payload)) <= TIMELINE_PAYLOAD_CHARS:
        return payload
    return {"_truncated": True, "fields": sorted(payload)}


def _fold_timeline(doc: Doc | None, ev: Event, payload: dict[str, Any]) -> Doc:
    """A run's recent events and policy decisions, so a run page needs no runtime access.

    Lives in `runtime.run_summaries` (same audience, same scope as the summary)."""
    d = _run_doc(
        doc,
        ev,
        events=[],
        policy=[],
    )
    if ev.event_type == "run.started":
        d["org_id"] = d["org_id"] or _org(payload)
    entry = {"seq": ev.seq, "type": ev.event_type, "at": ev.recorded_at, "payload": _brief(payload)}
    d["events"] = [*d["events"], entry][-TIMELINE_EVENTS:]
    if ev.event_type == "policy.decision":
        budget = payload.get("budget") if isinstance(payload.get("budget"), dict) else {}
        decision = {
            "seq": ev.seq,
            "at": ev.recorded_at,
            "decision_id": payload.get("decision_id"),
            "decision": payload.get("decision"),
            "reason_code": payload.get("reason_code"),
            "tool": payload.get("tool"),
            "amount_sats": payload.get("amount_sats"),
            "budget": budget,
        }
        d["policy"] = [*d["policy"], decision][-TIMELINE_POLICY:]
    d["last_seq"] = ev.seq
    return d


# -- streamed text (a run's text.delta events as one growing document) ------------------

TEXT_WINDOW_CHARS = 8192  # the kept text; older chunks are dropped (catalog.proto: RunText)


def _text_ids(ev: Event) -> list[str]:
    return [ev.stream_id] if ev.kind == "run" and ev.event_type in ("run.started", "text.delta") else []


def _fold_text(doc: Doc | None, ev: Event, payload: dict[str, Any]) -> Doc:
    """Append each token as a chunk (a one-operation patch on the wire), keeping only the
    last TEXT_WINDOW_CHARS characters: chunks leave from the front (one more `remove`),
    and a single chunk longer than the window keeps its tail."""
    d = _run_doc(
        doc,
        ev,
        chunks=[],
        chars=0,
        dropped_chars=0,
        last_seq=0,
    )
    d["last_seq"] = ev.seq
    if ev.event_type == "run.started":
        d["org_id"] = d["org_id"] or _org(payload)
        return d
    text = payload.get("text")
    if not isinstance(text, str) or not text:
        return d
    chunks: list[str] = [*d["chunks"], text]
    d["chars"] += len(text)
    dropped = d["dropped_chars"]
    window = d["chars"] - dropped
    first = 0
    while window > TEXT_WINDOW_CHARS and first < len(chunks) - 1:
        window -= len(chunks[first])
        dropped += len(chunks[first])
        first += 1
    chunks = chunks[first:]
    if window > TEXT_WINDOW_CHARS:  # one chunk longer than the window
        cut = window - TEXT_WINDOW_CHARS
        chunks = [chunks[0][cut:]]
        dropped += cut
    d["chunks"] = chunks
    d["dropped_chars"] = dropped
    return d


# -- codex workers ------------------------------------------------------------------------


def _worker_ids(ev: Event) -> list[str]:
    return [ev.stream_id] if ev.kind == "worker" else []


def _fold_worker(doc: Doc | None, ev: Event, payload: dict[str, Any]) -> Doc:
    d: Doc = (
        dict(doc)
        if doc
        else {
            "worker_id": ev.stream_id,
            "owner": owner_of(ev.principal),
            "org_id": None,
            "status": "starting",
            "created_at": ev.recorded_at,
            "event_count": 0,
            "last_heartbeat_at": None,
            "errors": 0,
        }
    )
    t = ev.event_type
    d["last_seq"] = ev.seq
    d["last_event_type"] = t
    d["last_event_at"] = ev.recorded_at
    d["event_count"] += 1
    # The runtime's own state machine, so the summary can never disagree with the runtime.
    if ev.seq == 1:
        target = target_status(t, payload)
        d["status"] = (target or WorkerStatus.STARTING).value
    else:
        d["status"] = worker_next_status(WorkerStatus(d["status"]), t, payload)[0].value
    if t == "worker.heartbeat":
        d["last_heartbeat_at"] = ev.recorded_at
    elif t == "worker.error":
        d["errors"] += 1
    if t == "worker.started":
        d["org_id"] = d["org_id"] or _org(payload)
    for field in ("workspace_ref", "adapter"):
        if isinstance(payload.get(field), str) and payload[field]:
            d[field] = payload[field]
    return d


def _worker_event_ids(ev: Event) -> list[str]:
    return [f"{ev.stream_id}:{ev.seq}"] if ev.kind == "worker" else []


def _fold_worker_event(doc: Doc | None, ev: Event, payload: dict[str, Any]) -> Doc:
    return {
        "worker_id": ev.stream_id,
        "owner": owner_of(ev.principal),
        "org_id": _org(payload) if ev.event_type == "worker.started" else None,
        "seq": ev.seq,
        "event_type": ev.event_type,
        "payload": payload,
        "recorded_at": ev.recorded_at,
    }


# -- daily spend per run (summed per org and day by its readers) ----------------------------


def _spend_ids(ev: Event) -> list[str]:
    return [ev.stream_id] if ev.kind == "run" and ev.event_type in ("run.started", "policy.decision") else []


def _fold_daily_spend(doc: Doc | None, ev: Event, payload: dict[str, Any]) -> Doc:
    """Allowed decisions' requested sats, by the UTC day the decision was recorded."""
    d = _run_doc(
        doc,
        ev,
        days={},
        total_sats=0,
        decisions=0,
    )
    if ev.event_type == "run.started":
        d["org_id"] = d["org_id"] or _org(payload)
        return d
    budget = payload.get("budget")
    sats = budget.get("requested_sats") if isinstance(budget, dict) else None
    if payload.get("decision") == "allow" and isinstance(sats, int) and sats > 0:
        day = ev.recorded_at[:10]
        d["days"] = {**d["days"], day: d["days"].get(day, 0) + sats}
        d["total_sats"] += sats
        d["decisions"] += 1
    return d


# -- notifications --------------------------------------------------------------------------

_NOTIFY = {
    ("run.finished", "succeeded"): "run_succeeded",
    ("run.finished", "failed"): "run_failed",
    ("run.finished", "canceled"): "run_canceled",
}


def _notification_kind(ev: Event, payload: dict[str, Any]) -> str | None:
    if ev.kind != "run":
        return None
    if ev.event_type == "policy.budget_exhausted":
        return "budget_exhausted"
    if ev.event_type == "run.executor_lost":
        return "executor_lost"
    return _NOTIFY.get((ev.event_type, str(payload.get("status"))))


def _notification_ids(ev: Event) -> list[str]:
    if ev.kind != "run" or ev.event_type not in (
        "run.finished",
        "policy.budget_exhausted",
        "run.executor_lost",
    ):
        return []
    return [ev.stream_id]


_MESSAGES = {
    "run_succeeded": "Run {run} finished successfully.",
    "run_failed": "Run {run} failed.",
    "run_canceled": "Run {run} was canceled.",
    "budget_exhausted": "Run {run} hit its spend budget.",
    "executor_lost": "Run {run} lost its executor.",
}


def _fold_notification(doc: Doc | None, ev: Event, payload: dict[str, Any]) -> Doc | None:
    """One notification document per run, addressed to its owner, notices oldest first."""
    d: Doc = dict(doc) if doc else {"run_id": ev.stream_id, "owner": owner_of(ev.principal), "notices": []}
    kind = _notification_kind(ev, payload)
    if kind is None:
        return doc
    d["notices"] = [
        *d["notices"],
        {
            "kind": kind,
            "seq": ev.seq,
            "at": ev.recorded_at,
            "message": _MESSAGES[kind].format(run=ev.stream_id),
        },
    ]
    d["latest"] = kind
    return d


# The folds, keyed by the name their declaration carries. Adding a projection: declare its
# document in proto/oa/sync/v1/catalog.proto and register its fold here; nothing else.
FOLDS: dict[str, tuple[Ids, Fold]] = {
    "run_summaries": (_run_ids, _fold_run),
    "codex_worker_summaries": (_worker_ids, _fold_worker),
    "codex_worker_events": (_worker_event_ids, _fold_worker_event),
    "notifications": (_notification_ids, _fold_notification),
    "run_timelines": (_run_ids, _fold_timeline),
    "run_daily_spend": (_spend_ids, _fold_daily_spend),
    "run_text": (_text_ids, _fold_text),
}


def _registry() -> tuple[Projection, ...]:
    undeclared = sorted(set(FOLDS) - set(DECLARED))
    foldless = sorted(set(DECLARED) - set(FOLDS))
    if undeclared or foldless:
        raise RuntimeError(
            f"projections without a declaration: {undeclared}; declarations without a fold: {foldless}"
            " (declare in proto/oa/sync/v1/catalog.proto, fold in oa.runtime.projector.projections)"
        )
    return tuple(Projection(d, *FOLDS[d.name]) for d in DECLARED.values())


PROJECTIONS: tuple[Projection, ...] = _registry()
BY_NAME = {p.name: p for p in PROJECTIONS}


def decode(ev: Event) -> dict[str, Any]:
    payload = orjson.loads(ev.payload_json)
    return payload if isinstance(payload, dict) else {}
