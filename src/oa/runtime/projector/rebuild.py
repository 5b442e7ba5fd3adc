"""Rebuild, audit and reset: the projections are derived, so they can always be redone.

`rebuild` folds the whole journal into a fresh generation beside the live one (clients stay
connected to the live one), then, holding the state row lock that every projector batch
takes, brings both to the journal head, compares them document by document (parity),
journals whatever differs so connected clients converge, switches `live_generation`
atomically and drops the old generation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import orjson

from oa.khala.store import generations, writer
from oa.khala.topics import projection_of_key
from oa.runtime.adapters.journal_sql import journal_head, read_journal
from oa.runtime.projector.fold import doc_change, fold_batch
from oa.runtime.projector.projections import BY_NAME, Doc, Projection
from oa.runtime.projector.projector import project_batch

Progress = Callable[[int, int], None]  # (events folded so far, journal head)


@dataclass
class ParityReport:
    documents: int = 0
    drift: list[str] = field(default_factory=list)
    events: int = 0


async def _docs(conn: asyncpg.Connection, generation: int) -> dict[str, tuple[str, str, int, str]]:
    rows = await generations.documents(conn, generation)
    return {k: (d.topic, d.payload_hash, d.doc_version, d.payload) for k, d in rows.items()}


def _owner(doc_key: str) -> Projection:
    return BY_NAME[projection_of_key(doc_key).name]


async def rebuild(
    conn: asyncpg.Connection, progress: Progress | None = None, batch: int = 5000
) -> ParityReport:
    live = await writer.live_generation(conn)
    new = await generations.next_generation(conn)
    head = await journal_head(conn)
    done = 0
    while n := await project_batch(conn, generation=new, batch_size=batch, journal=False):
        done += n
        if progress:
            progress(done, head)
    report = ParityReport(events=done)
    async with conn.transaction():
        await writer.lock_live_generation(conn)
        while await project_batch(conn, batch_size=batch):  # live to the head
            pass
        while await project_batch(conn, generation=new, batch_size=batch, journal=False):
            pass
        old_docs, new_docs = await _docs(conn, live), await _docs(conn, new)
        report.documents = len(new_docs)
        changes = []
        for key in sorted(set(old_docs) | set(new_docs)):
            o, n_ = old_docs.get(key), new_docs.get(key)
            if o is not None and n_ is not None and o[1] == n_[1] and o[2] == n_[2]:
                continue
            report.drift.append(key)
            if n_ is not None:
                # The projection that owns the key (by its declared prefix), not "the first
                # of its topic": two projections share runtime.run_summaries.
                _, _, version, payload = n_
                changes.append(doc_change(_owner(key), key, orjson.loads(payload), version))
            else:
                _, _, version, _ = o  # type: ignore[misc]
                changes.append(doc_change(_owner(key), key, None, version))
        # Journal the differences against the new generation, then make it live.
        await writer.apply(conn, new, changes, {}, journal=True)
        await generations.switch_generation(conn, new, live)
    return report


async def audit(
    conn: asyncpg.Connection, progress: Progress | None = None, batch: int = 5000
) -> ParityReport:
    """Compare every live document with a fresh in-memory fold of the journal.

    A projection whose live documents were folded by another version than the declared
    one is being rebuilt in the background (see builds.py): it is left out, documents and
    all, rather than reported as drift."""
    report = ParityReport()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        live = await writer.live_generation(conn)
        cps_live = await writer.load_checkpoints(conn, live)
        current = {
            n: c for n, c in cps_live.items() if n in BY_NAME and c.version in (None, BY_NAME[n].version)
        }
        upto = {n: c.position for n, c in current.items()}
        stale = tuple(BY_NAME[n].doc_prefix for n in cps_live if n in BY_NAME and n not in current)
        stored = {k: v for k, v in (await _docs(conn, live)).items() if not k.startswith(stale)}
        projections = [BY_NAME[name] for name in upto]
        docs: dict[str, tuple[Doc, int]] = {}
        cps = dict.fromkeys(upto, 0)
        head = max(upto.values(), default=0)
        after = 0
        while after < head:
            events = [e for e in await read_journal(conn, after, batch) if e.position <= head]
            if not events:
                break
            for p in projections:
                mine = [e for e in events if e.position <= upto[p.name]]
                result = fold_batch([p], mine, cps, docs)
                for ch in result.changes:
                    if ch.payload is None:
                        docs.pop(ch.doc_key, None)
                    else:
                        docs[ch.doc_key] = (orjson.loads(ch.payload), ch.doc_version)
                cps.update(result.checkpoints)
            after = events[-1].position
            report.events = after
            if progress:
                progress(after, head)
        expected: dict[str, tuple[str, int]] = {}
        for key, (d, v) in docs.items():
            ch = doc_change(_owner(key), key, d, v)
            expected[key] = (ch.payload_hash or "", v)
        report.documents = len(stored)
        for key in sorted(set(expected) | set(stored)):
            e, s = expected.get(key), stored.get(key)
            if e is None or s is None or e[0] != s[1] or e[1] != s[2]:
                report.drift.append(key)
    return report


reset = generations.reset  # empty Khala entirely: what a drop-and-rebuild starts from
