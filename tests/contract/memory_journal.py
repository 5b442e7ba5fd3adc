"""A reference journal in memory: the smallest thing that passes the contract.

It exists so the contract suite is checked against a second, obviously correct backend
(one lock, one list), which keeps the contract honest about what it demands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from oa.runtime.domain.journal import AppendRequest, Event, Plan, StreamHead, plan_command
from oa.runtime.service.runs import run_transition


class MemoryJournal:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._events: list[Event] = []
        self._heads: dict[str, StreamHead] = {}

    async def append(self, stream_id: str, principal: str, requests: Sequence[AppendRequest]) -> Plan:
        async with self._lock:
            head = self._heads.get(stream_id) or StreamHead(
                "run", stream_id, principal, "created", exists=False
            )
            keys = {r.idempotency_key for r in requests}
            stored = {
                e.idempotency_key: e
                for e in self._events
                if e.stream_id == stream_id and e.idempotency_key is not None and e.idempotency_key in keys
            }
            plan = plan_command(head, principal, requests, stored, run_transition)
            placed = [replace(e, position=len(self._events) + i + 1) for i, e in enumerate(plan.new_events)]
            self._events.extend(placed)
            if placed:
                self._heads[stream_id] = replace(plan.head, exists=True)
            by_seq = {e.seq: e for e in placed}
            outcomes = [
                replace(o, event=by_seq[o.event.seq]) if o.result == "appended" and o.event else o
                for o in plan.outcomes
            ]
            return replace(plan, outcomes=outcomes, new_events=placed)

    async def read_stream(self, stream_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        return [e for e in self._events if e.stream_id == stream_id and e.seq > after_seq][:limit]

    async def read_journal(self, after_position: int, limit: int = 1000) -> list[Event]:
        return self._events[after_position : after_position + limit]

    async def head_position(self) -> int:
        return len(self._events)
