"""The projector loop: tail the runtime journal in commit order, fold, commit to Khala.

One projector at a time per deployment: it holds a Postgres advisory lock while it runs, so
a second one (another runtime process) waits as a hot standby and takes over if the first
dies. Each batch is one transaction: documents, journal rows and checkpoints commit
together, so a kill -9 anywhere leaves either all of a batch or none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import asyncpg
import orjson
from prometheus_client import Counter, Gauge

from oa.khala.store import maintenance, writer
from oa.khala.topics import TOPIC_NAMES
from oa.runtime.adapters.journal_sql import event_ages, journal_head, read_journal
from oa.runtime.projector.deltas import with_patches
from oa.runtime.projector.fold import fold_batch, keys_for
from oa.runtime.projector.projections import PROJECTIONS, Projection

log = logging.getLogger(__name__)
LEADER_LOCK = 7_270_431_002

EVENTS_BEHIND = Gauge("oa_projector_events_behind", "Journal events not yet projected", ["projection"])
SECONDS_BEHIND = Gauge("oa_projector_seconds_behind", "Age of the oldest unprojected event", ["projection"])
EVENTS_PROJECTED = Counter("oa_projector_events_read_total", "Journal events read by projector batches")


async def project_batch(
    conn: asyncpg.Connection,
    generation: int | None = None,
    projections: Sequence[Projection] = PROJECTIONS,
    batch_size: int = 1000,
    journal: bool = True,
    deltas: bool = True,
) -> int:
    """Fold and commit one batch; returns how many journal events it read (0 = caught up).

    `deltas=False` journals every change whole (the baseline `oa bench deltas` measures)."""
    async with conn.transaction():
        # The state row lock serializes batches with a rebuild's switch of generations.
        live = await writer.lock_live_generation(conn)
        gen = live if generation is None else generation
        cps = await writer.load_checkpoints(conn, gen)
        healthy = [p for p in projections if p.name not in cps or cps[p.name].failed_at is None]
        if not healthy:
            return 0
        positions = {p.name: cps[p.name].position if p.name in cps else 0 for p in healthy}
        start = min(positions.values())
        events = await read_journal(conn, start, batch_size)
        if not events:
            return 0
        stored = await writer.load_documents(conn, gen, keys_for(healthy, events))
        current = {k: (orjson.loads(d.payload), d.doc_version) for k, d in stored.items()}
        result = fold_batch(healthy, events, positions, current)
        journaled = journal and gen == live
        changes = result.changes
        if journaled and deltas:  # only the live generation's journal carries deltas (clients read it)
            changes = with_patches(changes, stored, {k: doc for k, (doc, _) in current.items()})
        for f in result.failures:
            log.error("projection %s stopped at position %d: %s", f.projection, f.position, f.message)
            await writer.record_failure(conn, gen, f.projection, f.position, f.message)
        versions = {p.name: p.version for p in healthy}
        await writer.apply(conn, gen, changes, result.checkpoints, journal=journaled, versions=versions)
        return len(events)


async def lag(
    conn: asyncpg.Connection | asyncpg.Pool, projections: Sequence[Projection] = PROJECTIONS
) -> dict[str, dict[str, object]]:
    """Per projection: events behind the journal head and seconds since the oldest unseen one."""
    head = await journal_head(conn)
    states = await maintenance.projection_states(conn)
    positions = sorted({s.position for s in states.values()})
    ages = await event_ages(conn, [p + 1 for p in positions])
    out: dict[str, dict[str, object]] = {}
    for p in projections:
        s = states.get(p.name)
        position = s.position if s is not None else 0
        building = s is not None and s.build_position is not None
        failed = s is not None and (s.failed_at is not None or s.build_error is not None)
        out[p.name] = {
            "position": position,
            "events_behind": head - position,
            "seconds_behind": ages.get(position + 1, 0.0) if s is not None else None,
            "error": (s.error or s.build_error) if s is not None else None,
            "version": p.version,
            "stored_version": s.version if s is not None else None,
            "state": "failed" if failed else "catching_up" if building else "live" if s else "new",
            "build_position": s.build_position if s is not None else None,
            "journal_head": head,
        }
    return out


class Projector:
    """Runs `project_batch` whenever the journal moves, while holding the leader lock."""

    def __init__(
        self,
        writer_url: str,
        batch_size: int = 1000,
        idle_poll_s: float = 1.0,
        prune_every_s: float = 60.0,
        build_batch_size: int = 500,
        projections: Sequence[Projection] = PROJECTIONS,
        deltas: bool = True,
    ) -> None:
        self._projections = tuple(projections)
        self._deltas = deltas
        # A build folds `build_batch_size` events between two rounds of live batches: the
        # most a live update waits for a catch-up (see bench/projection_catchup.py).
        self._build_batch = build_batch_size
        self.switched: list[object] = []  # SwitchReports of the builds that switched in
        self._prune_every = prune_every_s
        self._url = writer_url
        self._batch = batch_size
        self._idle = idle_poll_s
        self._task: asyncio.Task[None] | None = None
        self.leader = False
        self.last_batch_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="oa-projector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: reconnect with backoff
                log.warning("projector lost its connection (%s); retrying", exc)
                self.leader = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _lead(self) -> None:
        from oa.runtime.projector import builds  # imported late: it imports this module
        from oa.runtime.projector.prune import prune  # imported late, like requests below
        from oa.runtime.projector.requests import run_pending_requests  # it imports rebuild, which imports us

        conn = await asyncpg.connect(self._url)
        woke = asyncio.Event()
        try:
            await conn.execute("SET TIME ZONE 'UTC'")
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                await asyncio.sleep(self._idle)  # a hot standby
            self.leader = True
            await conn.add_listener("oa_journal", lambda *_: woke.set())
            await conn.add_listener("khala_admin_requests", lambda *_: woke.set())
            measured = pruned = 0.0
            building = await builds.reconcile(conn, self._projections)  # declared vs stored versions
            while True:
                woke.clear()
                live = builds.live_projections(building, self._projections)
                while n := await project_batch(
                    conn, projections=live, batch_size=self._batch, deltas=self._deltas
                ):
                    self.last_batch_at = time.monotonic()
                    EVENTS_PROJECTED.inc(n)
                pending = [b for b in building.values() if not b.failed]
                if pending:
                    build = pending[0]
                    if not await builds.step(conn, build, self._build_batch) and not build.failed:
                        report = await builds.switch_in(conn, build, building, self._projections)
                        if report is not None:
                            del building[build.projection.name]
                            self.switched.append(report)
                    woke.set()  # come straight back: live batches first, then the next step
                if time.monotonic() - measured > 2.0:
                    measured = time.monotonic()
                    for name, row in (await lag(conn)).items():
                        EVENTS_BEHIND.labels(name).set(float(row["events_behind"]))  # type: ignore[arg-type]
                        SECONDS_BEHIND.labels(name).set(float(row["seconds_behind"] or 0.0))  # type: ignore[arg-type]
                if await run_pending_requests(conn):  # rebuild/prune/audit asked through Khala's admin API
                    building = await builds.reconcile(conn, self._projections)  # a rebuild replaced builds
                if time.monotonic() - pruned > self._prune_every:
                    # Retention and replay budgets hold without anyone asking.
                    pruned = time.monotonic()
                    for topic in TOPIC_NAMES:
                        await prune(conn, topic)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woke.wait(), self._idle)
        finally:
            self.leader = False
            with contextlib.suppress(Exception):
                await conn.close()
