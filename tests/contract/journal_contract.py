"""What every event-journal backend must do, as tests a backend subclass inherits.

In the style of the `eventsourcing` library's shared recorder tests: subclass
`JournalContract` in a `Test...` class and override the `journal` fixture to yield your
backend. Tests only look at streams they create and at journal positions after the head
they saw when they started, so a shared database with other writers does not disturb them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Protocol

import pytest

from oa.exceptions import Forbidden, IdempotencyConflict, InvalidTransition, SeqMismatch
from oa.runtime.domain.journal import AppendRequest, Event, Plan

OWNER = "user:contract"


class JournalBackend(Protocol):
    async def append(self, stream_id: str, principal: str, requests: Sequence[AppendRequest]) -> Plan: ...
    async def read_stream(self, stream_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...
    async def read_journal(self, after_position: int, limit: int = 1000) -> list[Event]: ...
    async def head_position(self) -> int: ...


def delta(text: str, key: str | None = None, expected: int | None = None) -> AppendRequest:
    return AppendRequest("text.delta", {"text": text}, key, expected)


def new_stream() -> str:
    return f"run-c{uuid.uuid4().hex[:12]}"


async def journal_since(journal: JournalBackend, start: int, streams: set[str]) -> list[Event]:
    out: list[Event] = []
    while batch := await journal.read_journal(start, 500):
        out.extend(e for e in batch if e.stream_id in streams)
        start = batch[-1].position
    return out


class JournalContract:
    @pytest.fixture
    def journal(self) -> JournalBackend:
        raise NotImplementedError("a backend's test class overrides the `journal` fixture")

    async def test_append_and_read_stream(self, journal: JournalBackend) -> None:
        sid = new_stream()
        plan = await journal.append(sid, OWNER, [delta("a"), delta("b"), delta("c")])
        stored = await journal.read_stream(sid)
        assert [e.seq for e in stored] == [1, 2, 3]
        assert [e.hash for e in stored] == [e.hash for e in plan.new_events]
        assert [e.position for e in stored] == [e.position for e in plan.new_events]
        assert stored[1].prev_hash == stored[0].hash and stored[0].prev_hash is None
        assert [e.seq for e in await journal.read_stream(sid, after_seq=1, limit=1)] == [2]
        assert await journal.read_stream(new_stream()) == []

    async def test_read_journal_is_in_position_order(self, journal: JournalBackend) -> None:
        start = await journal.head_position()
        a, b = new_stream(), new_stream()
        acked: list[Event] = []
        for i in range(6):
            plan = await journal.append(a if i % 2 else b, OWNER, [delta(str(i))])
            acked.extend(plan.new_events)
        seen = await journal_since(journal, start, {a, b})
        assert [(e.stream_id, e.seq, e.hash) for e in seen] == [(e.stream_id, e.seq, e.hash) for e in acked]
        positions = [e.position for e in seen]
        assert positions == sorted(set(positions)) and positions[0] > start

    async def test_idempotent_append(self, journal: JournalBackend) -> None:
        sid = new_stream()
        first = await journal.append(sid, OWNER, [delta("a", "k1")])
        again = await journal.append(sid, OWNER, [delta("a", "k1")])
        assert again.outcomes[0].result == "replayed" and not again.changed
        assert again.outcomes[0].event is not None
        assert again.outcomes[0].event.position == first.new_events[0].position
        with pytest.raises(IdempotencyConflict):
            await journal.append(sid, OWNER, [delta("other", "k1")])
        assert len(await journal.read_stream(sid)) == 1

    async def test_batch_is_all_or_nothing(self, journal: JournalBackend) -> None:
        sid = new_stream()
        await journal.append(sid, OWNER, [delta("a")])
        finished = AppendRequest("run.finished", {"status": "succeeded"})
        with pytest.raises(InvalidTransition):
            await journal.append(sid, OWNER, [delta("b"), finished, delta("too late")])
        with pytest.raises(SeqMismatch):
            await journal.append(sid, OWNER, [delta("c", expected=1), delta("d", expected=1)])
        assert [e.seq for e in await journal.read_stream(sid)] == [1]

    async def test_only_the_owner_appends(self, journal: JournalBackend) -> None:
        sid = new_stream()
        await journal.append(sid, OWNER, [delta("a")])
        with pytest.raises(Forbidden):
            await journal.append(sid, "user:intruder", [delta("b")])
        assert len(await journal.read_stream(sid)) == 1

    async def test_concurrent_appends_get_distinct_positions_in_commit_order(
        self, journal: JournalBackend
    ) -> None:
        start = await journal.head_position()
        streams = [new_stream() for _ in range(5)]

        async def wave(tag: str) -> list[Event]:
            plans = await asyncio.gather(
                *(journal.append(s, OWNER, [delta(f"{tag}{i}")]) for i in range(4) for s in streams)
            )
            return [e for p in plans for e in p.new_events]

        first = await wave("x")
        second = await wave("y")  # submitted only after every first-wave append was acknowledged
        assert max(e.position for e in first) < min(e.position for e in second)
        seen = await journal_since(journal, start, set(streams))
        assert {e.position for e in seen} == {e.position for e in first + second}
        assert [e.position for e in seen] == sorted({e.position for e in seen})
        for s in streams:
            assert [e.seq for e in await journal.read_stream(s)] == list(range(1, 9))
