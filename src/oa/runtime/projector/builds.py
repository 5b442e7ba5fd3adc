"""Per-projection builds: a new or re-versioned projection catches up beside the live ones.

Why: a projection starting at position 0 in the live generation held every live topic
back, since a batch reads from the lowest checkpoint (with 10 million events, minutes of
no live updates). Now such a projection builds in a generation of its own (blue/green per
projection): the projector folds a bounded batch of it only after the live projections
have caught up, so live topics keep projecting at full speed, and when the build reaches
the journal head it switches in, under the state row lock every batch takes:

1. live projections and the build are brought to the journal head (parity of position:
   the build's documents reflect exactly the events the live documents do);
2. the build's documents replace the live ones under the projection's declared prefix,
   and every document that differs is journaled in ONE batch, which the reader never
   splits, so a client sees all of the switch or none of it, never both versions mixed;
3. a re-versioned projection's documents keep their `doc_version`; every update carries
   the `projection_version` too, and clients order by (projection_version, doc_version),
   so the switch batch replaces what they hold (a client resuming from before the switch
   replays that same batch).

On start the projector compares each declared version (proto/oa/sync/v1/catalog.proto)
with the one its live checkpoint holds and builds those that differ.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson

from oa.khala.store import generations, writer
from oa.runtime.adapters.journal_sql import journal_head
from oa.runtime.projector.fold import doc_change
from oa.runtime.projector.projections import PROJECTIONS, Projection
from oa.runtime.projector.projector import project_batch

log = logging.getLogger(__name__)


@dataclass
class Build:
    projection: Projection
    generation: int
    version: int
    reversion: bool  # a live version existed (its clients must re-hydrate)
    failed: bool = False


@dataclass
class SwitchReport:
    projection: str
    version: int
    position: int
    documents: int
    journaled: list[str] = field(default_factory=list)  # keys whose change clients receive


async def reconcile(
    conn: asyncpg.Connection, projections: Sequence[Projection] = PROJECTIONS
) -> dict[str, Build]:
    """Builds to run: one per declared projection whose live version is missing or differs.

    A fresh store (no live checkpoint at all) builds nothing: every projection starts at 0
    together in the live generation, so there is nothing to hold back."""
    out: dict[str, Build] = {}
    async with conn.transaction():
        live = await writer.lock_live_generation(conn)
        cps = await writer.load_checkpoints(conn, live)
        running = await generations.builds(conn, live)
        fresh = not cps
        for p in projections:
            cp = cps.get(p.name)
            have = running.get(p.name)
            if fresh or (cp is not None and cp.version == p.version):
                if have is not None:  # a build for a version no longer declared
                    await generations.drop_generation(conn, have[0])
                continue
            if have is not None and have[2] == p.version:
                out[p.name] = Build(p, have[0], p.version, cp is not None, have[3] is not None)
                continue
            if have is not None:
                await generations.drop_generation(conn, have[0])
            gen = await generations.start_build(conn, p.name, p.version, live)
            log.info(
                "projection %s v%d: building beside the live ones (generation %d)", p.name, p.version, gen
            )
            out[p.name] = Build(p, gen, p.version, cp is not None)
    return out


def live_projections(
    building: dict[str, Build], projections: Sequence[Projection] = PROJECTIONS
) -> list[Projection]:
    return [p for p in projections if p.name not in building]


async def step(conn: asyncpg.Connection, build: Build, batch_size: int) -> int:
    """Fold one batch of the build; returns events read (0: caught up, or failed)."""
    n = await project_batch(
        conn,
        generation=build.generation,
        projections=[build.projection],
        batch_size=batch_size,
        journal=False,
    )
    if n == 0:
        cp = (await writer.load_checkpoints(conn, build.generation)).get(build.projection.name)
        build.failed = cp is not None and cp.failed_at is not None
    return n


async def switch_in(
    conn: asyncpg.Connection,
    build: Build,
    building: dict[str, Build],
    projections: Sequence[Projection] = PROJECTIONS,
    batch_size: int = 5000,
) -> SwitchReport | None:
    """Move a caught-up build into the live generation (see the module docstring).

    Returns None when the build failed on the way (it stays, failed, for an operator)."""
    p = build.projection
    # One snapshot for the whole switch: the live projections, the build and the journal
    # head all see the same committed events (the journal commits in position order).
    async with conn.transaction(isolation="repeatable_read"):
        live = await writer.lock_live_generation(conn)
        others = [q for q in live_projections(building, projections) if q.name != p.name]
        while await project_batch(conn, projections=others, batch_size=batch_size):
            pass
        while await project_batch(
            conn, generation=build.generation, projections=[p], batch_size=batch_size, journal=False
        ):
            pass
        head = await journal_head(conn)
        built = (await writer.load_checkpoints(conn, build.generation)).get(p.name)
        if built is None or built.failed_at is not None:
            build.failed = True
            return None
        live_cps = await writer.load_checkpoints(conn, live)
        behind = {
            q.name: live_cps[q.name].position
            for q in others
            if q.name in live_cps and live_cps[q.name].position != head and live_cps[q.name].failed_at is None
        }
        if built.position != head or behind:
            raise RuntimeError(
                f"parity: {p.name} build at {built.position}, live {behind}, journal head {head}"
            )
        old = await generations.documents(conn, live, p.doc_prefix)
        new = await generations.documents(conn, build.generation, p.doc_prefix)
        changes = []
        for key in sorted(set(old) | set(new)):
            o, n = old.get(key), new.get(key)
            if (
                o is not None
                and n is not None
                and (o.payload_hash, o.doc_version) == (n.payload_hash, n.doc_version)
            ):
                continue
            if n is not None:
                changes.append(doc_change(p, key, orjson.loads(n.payload), n.doc_version))
            else:
                assert o is not None
                changes.append(doc_change(p, key, None, o.doc_version))
        await generations.finish_build(conn, p.name, p.doc_prefix, build.generation, live)
        await writer.apply(conn, live, changes, {}, journal=True)
    log.info(
        "projection %s v%d switched in at %d: %d documents, %d changed",
        p.name,
        p.version,
        head,
        len(new),
        len(changes),
    )
    return SwitchReport(p.name, p.version, head, len(new), [c.doc_key for c in changes])
