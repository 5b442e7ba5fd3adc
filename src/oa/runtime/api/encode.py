"""Fast JSON out: stored canonical payloads are embedded as they are (orjson.Fragment)."""

from __future__ import annotations

from typing import Any

import orjson

from oa.http import json_response as json_response  # the one JSON writer, re-exported for routes
from oa.runtime.domain.journal import Event, Outcome, Plan


def event_json(ev: Event, id_field: str = "run_id") -> dict[str, Any]:
    return {
        id_field: ev.stream_id,
        "seq": ev.seq,
        "event_type": ev.event_type,
        "payload": orjson.Fragment(ev.payload_json),
        "payload_hash": ev.payload_hash,
        "prev_hash": ev.prev_hash,
        "hash": ev.hash,
        "position": ev.position,
        "idempotency_key": ev.idempotency_key,
        "principal": ev.principal,
        "recorded_at": ev.recorded_at,
    }


def outcome_json(run_id: str, o: Outcome) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "result": o.result,
        "idempotentReplay": o.result == "replayed",
        "event": event_json(o.event) if o.event is not None else None,
        "status": o.status,
        "last_seq": o.last_seq,
    }


def batch_json(run_id: str, plan: Plan) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "results": [outcome_json(run_id, o) for o in plan.outcomes],
        "status": plan.head.status,
        "last_seq": plan.head.last_seq,
    }


def plan_status(plan: Plan) -> int:
    """201 when something new was written, 200 for replays and no-ops."""
    return 201 if plan.changed else 200
