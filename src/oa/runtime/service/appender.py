"""Group commit: many append commands, one transaction, one position allocation.

Every append (single event or batch) becomes a `Command` on a queue. One loop takes all
the commands waiting, plans each against the head the previous one left (pure domain), and
commits the lot in a single transaction. A command that fails its rules is answered with
its error and changes nothing; the others still commit. Callers are answered only after
COMMIT returns, so an acknowledged event is durable.

Why: the global position is allocated under a row lock held to commit (see
`adapters/journal_sql.py`), so committing writers are serialized; batching many commands
per commit is what turns ~1,800 commits/s into tens of thousands of events/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import asyncpg

from oa.exceptions import InternalError, NotFound, OAError
from oa.runtime.adapters import journal_sql as sql
from oa.runtime.domain.journal import AppendRequest, Event, Plan, StreamHead, TransitionFn, plan_command
from oa.store.database import Database

log = logging.getLogger(__name__)


@dataclass
class Command:
    kind: str
    stream_id: str
    principal: str
    requests: Sequence[AppendRequest]
    transition: TransitionFn
    initial_status: str
    create_if_missing: bool = True
    org: str | None = None  # the org the caller's signature vouches for
    future: asyncio.Future[Plan] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class _RetryBatch(Exception):
    """Another process created a stream we planned as new: replan the whole batch."""


class GroupAppender:
    def __init__(
        self,
        db: Database,
        *,
        max_batch_events: int = 5000,
    ) -> None:
        self._db = db
        self._queue: asyncio.Queue[Command] = asyncio.Queue()
        self._max = max_batch_events
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[Command] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0
        self.commands = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="oa-group-appender")

    async def stop(self, drain_s: float = 5.0) -> None:
        """Let the batch being committed finish (its callers get their answer), then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for cmd in self._inflight:
            if not cmd.future.done():
                # Cut off mid-commit: the outcome is unknown, so say so (retry is safe with keys).
                cmd.future.set_exception(
                    InternalError(
                        "the runtime stopped during the commit; retry with the same idempotency_key"
                    )
                )
        while not self._queue.empty():
            cmd = self._queue.get_nowait()
            if not cmd.future.done():
                cmd.future.set_exception(InternalError("the runtime is shutting down; retry"))

    async def submit(self, command: Command) -> Plan:
        if self._task is None or self._task.done():
            raise InternalError("the appender is not running; retry shortly")
        await self._queue.put(command)
        return await command.future

    async def append(
        self,
        kind: str,
        stream_id: str,
        principal: str,
        requests: Sequence[AppendRequest],
        transition: TransitionFn,
        initial_status: str,
        create_if_missing: bool = True,
        org: str | None = None,
    ) -> Plan:
        return await self.submit(
            Command(kind, stream_id, principal, requests, transition, initial_status, create_if_missing, org)
        )

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            size = len(first.requests)
            while size < self._max and not self._queue.empty():
                nxt = self._queue.get_nowait()
                batch.append(nxt)
                size += len(nxt.requests)
            self._inflight = batch
            self._idle.clear()
            try:
                await self._commit_batch(batch)
            finally:
                self._inflight = []
                self._idle.set()

    async def _commit_batch(self, batch: list[Command]) -> None:
        for _attempt in range(5):
            try:
                results = await self._try_commit(batch)
            except _RetryBatch:
                continue
            except Exception as exc:  # the transaction rolled back: nothing was written
                log.exception("append batch failed")
                err = InternalError(
                    "the event store failed to commit; nothing was written, retry "
                    "(with the same idempotency_key to be safe)",
                    {"cause": type(exc).__name__},
                )
                for cmd in batch:
                    if not cmd.future.done():
                        cmd.future.set_exception(err)
                return
            for cmd, result in zip(batch, results, strict=True):
                if cmd.future.done():
                    continue
                if isinstance(result, OAError):
                    cmd.future.set_exception(result)
                else:
                    cmd.future.set_result(result)
            self.batches += 1
            self.commands += len(batch)
            return
        for cmd in batch:
            if not cmd.future.done():
                cmd.future.set_exception(InternalError("append kept racing stream creation; retry"))

    async def _try_commit(self, batch: list[Command]) -> list[Plan | OAError]:
        async with self._db.pool.acquire() as conn, conn.transaction():
            return await self._plan_and_write(conn, batch)

    async def _plan_and_write(self, conn: asyncpg.Connection, batch: list[Command]) -> list[Plan | OAError]:
        by_kind: dict[str, list[str]] = {}
        for cmd in batch:
            by_kind.setdefault(cmd.kind, []).append(cmd.stream_id)
        heads: dict[tuple[str, str], StreamHead] = {}
        for kind in sorted(by_kind):
            for sid, locked in (await sql.lock_heads(conn, kind, by_kind[kind])).items():
                heads[(kind, sid)] = locked
        keys = sorted(
            {
                (cmd.kind, cmd.stream_id, r.idempotency_key)
                for cmd in batch
                for r in cmd.requests
                if r.idempotency_key is not None
            }
        )
        stored = await sql.stored_by_keys(conn, keys)

        results: list[Plan | OAError] = []
        new_events: list[Event] = []
        created: dict[tuple[str, str], StreamHead] = {}
        touched: set[tuple[str, str]] = set()
        for cmd in batch:
            key = (cmd.kind, cmd.stream_id)
            head: StreamHead | None = heads.get(key)
            if head is None:
                if not cmd.create_if_missing:
                    results.append(
                        NotFound(
                            f"{cmd.kind} {cmd.stream_id!r} does not exist", {f"{cmd.kind}_id": cmd.stream_id}
                        )
                    )
                    continue
                head = StreamHead(cmd.kind, cmd.stream_id, cmd.principal, cmd.initial_status, exists=False)
            mine = {
                r.idempotency_key: stored[(cmd.kind, cmd.stream_id, r.idempotency_key)]
                for r in cmd.requests
                if r.idempotency_key is not None and (cmd.kind, cmd.stream_id, r.idempotency_key) in stored
            }
            try:
                plan = plan_command(head, cmd.principal, cmd.requests, mine, cmd.transition, cmd.org)
            except OAError as exc:
                results.append(exc)
                continue
            if plan.changed:
                for ev in plan.new_events:
                    if ev.idempotency_key is not None:
                        stored[(ev.kind, ev.stream_id, ev.idempotency_key)] = ev
                new_events.extend(plan.new_events)
                # The next command on this stream plans against this one's result.
                heads[key] = replace(plan.head, exists=True)
                touched.add(key)
                if not head.exists or key in created:
                    created[key] = heads[key]
            results.append(plan)

        if not new_events:
            return results

        created_keys = set(created)
        for kind in sorted({k for k, _ in created_keys}):
            # Sorted, like every lock we take: two batches creating the same streams
            # in opposite orders would otherwise deadlock on the primary key.
            fresh = sorted((h for (k, _), h in created.items() if k == kind), key=lambda h: h.stream_id)
            if await sql.create_heads(conn, fresh) != len(fresh):
                raise _RetryBatch
        changed = [heads[key] for key in sorted(touched - created_keys)]
        # Head updates, positions, events and the wake-up: one statement, one round trip.
        first, at = await sql.write_batch(conn, changed, new_events)
        placed = [_evolve(ev, position=first + i, recorded_at=at) for i, ev in enumerate(new_events)]

        by_id = {(e.kind, e.stream_id, e.seq): e for e in placed}
        return [_with_positions(r, by_id) for r in results]


def _with_positions(result: Plan | OAError, placed: dict[tuple[str, str, int], Event]) -> Plan | OAError:
    if isinstance(result, OAError) or not result.changed:
        return result
    outcomes = [
        _evolve(o, event=placed.get((o.event.kind, o.event.stream_id, o.event.seq), o.event))
        if o.result == "appended" and o.event is not None
        else o
        for o in result.outcomes
    ]
    events = [placed[(e.kind, e.stream_id, e.seq)] for e in result.new_events]
    return _evolve(result, outcomes=outcomes, new_events=events)


_T = TypeVar("_T")


def _evolve(obj: _T, **changes: Any) -> _T:
    """`dataclasses.replace` for our plain frozen dataclasses, without its reflection.

    Why: `replace` re-reads the fields and re-runs `__init__` (about 15 us a call on this
    machine kind), and the appender placed every event through it twice: a third of the
    commit loop's CPU in batches of 100. Copying the instance dict keeps every field,
    including any added later. Only for dataclasses without `__slots__` or `__post_init__`
    (Event, Outcome, Plan).
    """
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new
