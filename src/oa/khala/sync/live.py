"""Live queries: a subscription with its own id, one topic and a scope (one document, one
stream, or a list), resumed on its own; and the hub's index that finds the live queries a
committed change concerns (by doc key, by stream, by list filter), so a change costs what
it matches, not what is connected.

A list's view is exact. It is kept in memory (members and their sort keys) while that is
certain; when a member leaves a full list or sinks in it, the slot may belong to a
document the server does not hold, so the list is re-read from the store (its own query,
at most `limit` rows) and the difference sent. Every load (first subscribe, resume,
refresh) reads the store and the topic head in one snapshot; live rows that arrive
meanwhile are held and applied above that head, so nothing is missed or sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from oa.khala.store import live as store
from oa.khala.store.reader import JournalRow
from oa.khala.sync.protocol import ProtocolError
from oa.khala.topics import TOPICS

if TYPE_CHECKING:
    from oa.khala.sync.session import Session

log = logging.getLogger(__name__)

Kind = Literal["doc", "stream", "list"]


@dataclass(frozen=True)
class Scope:
    kind: Kind
    doc_key: str = ""
    stream: str = ""
    where: tuple[tuple[str, str], ...] = ()
    order_by: str = ""
    ascending: bool = False
    limit: int = 0


@dataclass(frozen=True)
class LiveSubscribe:
    sub: str
    topic: str
    scope: Scope
    resume_after: int | None
    request_id: str = ""


def stream_of(doc_key: str) -> str:
    """`runtime/run_timeline:r1` -> `r1`; `runtime/codex_worker_event:w1:7` -> `w1`
    (the same as the SQL `split_part(doc_key, ':', 2)`)."""
    parts = doc_key.split(":")
    return parts[1] if len(parts) > 1 else ""


def field_text(payload: Mapping[str, Any], name: str) -> str | None:
    """A payload field as Postgres' `->>` gives it: strings as they are, null/missing as None."""
    v = payload.get(name)
    if v is None or isinstance(v, str):
        return v
    return "true" if v is True else "false" if v is False else orjson.dumps(v).decode()


def parse_live_subscribe(
    msg: Mapping[str, Any], scopes: frozenset[str], *, max_list_limit: int
) -> LiveSubscribe:
    sub = msg.get("sub")

    def bad(message: str) -> ProtocolError:
        return ProtocolError("bad_subscription", message, sub=sub if isinstance(sub, str) else "")

    if not isinstance(sub, str) or not sub or len(sub) > 128:
        raise bad("`sub` must be a non-empty string of at most 128 characters: your id for this query")
    topic = msg.get("topic")
    if topic not in TOPICS:
        raise bad(f"`topic` must be one of {', '.join(TOPICS)}")
    assert isinstance(topic, str)
    if topic not in scopes:
        raise ProtocolError(
            "forbidden_topic", f"your token does not grant {topic}; ask control for it", topic=topic, sub=sub
        )
    raw = msg.get("scope")
    if not isinstance(raw, dict):
        raise bad("`scope` must be an object: {doc_key}, {stream} or {where, order_by, limit}")
    unknown = sorted(set(raw) - {"doc_key", "stream", "where", "order_by", "ascending", "limit"})
    if unknown:
        raise bad(
            f"unknown scope fields {unknown}; allowed: doc_key, stream, where, order_by, ascending, limit"
        )
    t = TOPICS[topic]
    doc_key, stream = raw.get("doc_key"), raw.get("stream")
    if doc_key is not None or stream is not None:
        if (doc_key is not None and stream is not None) or set(raw) - {"doc_key", "stream"}:
            raise bad("a scope is exactly one of {doc_key}, {stream} or a list {where, order_by, limit}")
        value = doc_key if doc_key is not None else stream
        if not isinstance(value, str) or not value or len(value) > 512:
            raise bad("`doc_key` / `stream` must be a non-empty string of at most 512 characters")
        scope = Scope("doc", doc_key=value) if doc_key is not None else Scope("stream", stream=value)
    else:
        where = raw.get("where") or {}
        if not isinstance(where, dict) or not all(isinstance(v, str) for v in where.values()):
            raise bad("`where` must map field -> string value (equality)")
        not_allowed = sorted(k for k in where if k not in t.queryable)
        if not_allowed:
            allowed = ", ".join(t.queryable) or "none"
            raise bad(f"{topic} cannot be filtered on {not_allowed}; queryable fields: {allowed}")
        order_by = raw.get("order_by") or (t.orderable[0] if t.orderable else "")
        if order_by not in t.orderable:
            allowed = ", ".join(t.orderable) or "none (lists are not offered on this topic)"
            raise bad(f"{topic} cannot be ordered by {order_by!r}; orderable fields: {allowed}")
        limit = raw.get("limit", 50)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= max_list_limit:
            raise bad(f"`limit` must be an integer from 1 to {max_list_limit}")
        scope = Scope(
            "list", where=tuple(sorted(where.items())), order_by=order_by,
            ascending=bool(raw.get("ascending", False)), limit=limit,
        )  # fmt: skip
    resume = msg.get("resume_after")
    cursor: int | None = None
    if isinstance(resume, dict) and resume:
        if set(resume) != {topic}:
            raise bad(f"`resume_after` of a live query holds only its topic: {{{topic!r}: watermark}}")
        cursor = resume[topic]
    elif isinstance(resume, int) and not isinstance(resume, bool):
        cursor = resume
    elif resume not in (None, {}):
        raise bad("`resume_after` must be {topic: watermark}")
    if cursor is not None and (not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0):
        raise bad("`resume_after` must hold a non-negative integer watermark")
    rid = msg.get("request_id", "")
    return LiveSubscribe(sub, topic, scope, cursor, rid if isinstance(rid, str) else "")


def order_key(payload: Mapping[str, Any], doc_key: str, order_by: str, ascending: bool) -> tuple[Any, ...]:
    """Sorts best first, as `store.list_documents` orders: missing values last."""
    v = field_text(payload, order_by)
    if v is None:
        return (1, _Rev(doc_key) if not ascending else doc_key)
    return (0, _Rev(v) if not ascending else v, _Rev(doc_key) if not ascending else doc_key)


class _Rev:
    """A string that sorts in reverse (byte order, as COLLATE "C")."""

    __slots__ = ("s",)

    def __init__(self, s: str) -> None:
        self.s = s.encode()

    def __lt__(self, other: _Rev) -> bool:
        return self.s > other.s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rev) and self.s == other.s

    def __hash__(self) -> int:
        return hash(self.s)


@dataclass
class _Member:
    key: tuple[Any, ...]
    version: int


@dataclass(eq=False)
class LiveQuery:
    session: Session
    spec: LiveSubscribe
    after: int = 0  # the topic watermark this query has reached: nothing at or below is resent
    loading: bool = True
    held: list[JournalRow] = field(default_factory=list)  # live rows that arrived while loading
    held_bytes: int = 0  # what `held` weighs: bounded by the socket's byte cap, like its queue
    members: dict[str, _Member] = field(default_factory=dict)  # a list's current view
    complete: bool = False  # the list holds every matching document (fewer than its limit)
    task: asyncio.Task[None] | None = None
    closed: bool = False

    @property
    def sub(self) -> str:
        return self.spec.sub

    @property
    def topic(self) -> str:
        return self.spec.topic

    @property
    def scope(self) -> Scope:
        return self.spec.scope

    # -- loading --------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._load(first=True))

    async def _load(self, first: bool = False) -> None:
        try:
            while not self.closed:
                loaded = await self._read(first)
                if loaded is None or self.closed:
                    return
                pages = self._take_loaded(loaded, first)
                # Paced like a whole-topic replay: each page waits until the socket's queue
                # (and the server's) is under half its byte cap; live rows meanwhile are held.
                for page in pages:
                    await self.session.room()
                    if self.closed:
                        return
                    self.session.send_query_batch(self, page, not first, paced=True)
                if self._go_live(first):
                    return
                first = False
        except ProtocolError as err:  # the read replica lags (see Hub.stored_heads)
            self.session.fail(err)
        except Exception:
            log.warning("khala live query load failed", exc_info=True)
            self.session.fail(
                ProtocolError(
                    "internal_error",
                    "the server could not read your live query; reconnect and resume",
                    fatal=True,
                    reconnect_after_ms=self.session.limits.reconnect_after_ms,
                )
            )

    async def _read(self, first: bool) -> store.Loaded | None:
        s, p, pool = self.scope, self.session.principal, self.session.hub.pool
        assert p is not None
        t = TOPICS[self.topic]
        if s.kind == "list":
            return await store.list_documents(
                pool, self.topic, doc_prefix=t.doc_prefix, where=dict(s.where), order_by=s.order_by,
                ascending=s.ascending, limit=s.limit, user_id=p.user_id, org_id=p.org_id,
            )  # fmt: skip
        key = s.doc_key if s.kind == "doc" else None
        stream = s.stream if s.kind == "stream" else None
        cursor = self.spec.resume_after if first else None
        if cursor is None:
            return await store.scope_documents(
                pool, self.topic, doc_key=key, stream=stream, user_id=p.user_id, org_id=p.org_id,
                limit=t.replay_budget,
            )  # fmt: skip
        await self.session.hub.stored_heads({self.topic: cursor})  # a replica catches up first
        loaded = await store.scope_changes_after(
            pool, self.topic, doc_key=key, stream=stream, after=cursor, limit=t.replay_budget + 1
        )
        if cursor < loaded.floor or cursor > loaded.head or len(loaded.rows) > t.replay_budget:
            why = (
                f"watermark {cursor} is below the retention floor {loaded.floor}"
                if cursor < loaded.floor
                else f"watermark {cursor} is ahead of the head {loaded.head}"
                if cursor > loaded.head
                else f"over {t.replay_budget} changes behind"
            )
            self.session.drop_query(self.sub)
            self.session.fail(
                ProtocolError(
                    "stale_cursor",
                    f"{self.sub}: {why}; subscribe again without resume_after to get the current documents",
                    topic=self.topic,
                    sub=self.sub,
                    full_resync_required=True,
                    retention_floor=loaded.floor,
                    head_watermark=loaded.head,
                )
            )
            return None
        self.after = cursor
        return loaded

    def _take_loaded(self, loaded: store.Loaded, first: bool) -> list[list[dict[str, Any]]]:
        """What was read, as pages of updates to send; the query's state moves to it."""
        p = self.session.principal
        assert p is not None
        rows = [r for r in loaded.rows if r.visible_to(p.user_id, p.org_id)]
        if self.scope.kind == "list":
            new = {r.doc_key: r for r in rows}
            before_keys = list(self.members)
            out = [
                remove_update(self.topic, k, m.version, loaded.head)
                for k, m in self.members.items()
                if k not in new
            ]
            out += [
                _upsert(r)
                for r in rows
                if (m := self.members.get(r.doc_key)) is None or m.version != r.doc_version
            ]
            self.members = {
                r.doc_key: _Member(
                    order_key(_parse(r), r.doc_key, self.scope.order_by, self.scope.ascending), r.doc_version
                )
                for r in rows
            }
            self.complete = len(rows) < self.scope.limit
            index = self.session.hub.queries
            index.members_changed(self, set(before_keys), set(self.members))
            index.loaded(self)
        else:
            # Journal rows of a resume may go as patches (the client holds the scope's state
            # at its cursor, and is sent every row after it in order); documents never do.
            out = [
                _upsert(r, patched=True)
                if r.payload is not None
                else remove_update(self.topic, r.doc_key, r.doc_version, r.watermark, True)
                for r in rows
            ]
        self.after = max(self.after, loaded.head)
        return _pages(out, self.session.limits.replay_page, self.session.limits.max_queued_bytes // 2)

    def _go_live(self, first: bool) -> bool:
        """Mark the load complete, then apply the rows held meanwhile; True when live.
        No await between the last page and here, so no live row slips between them."""
        if first:  # a refresh is live already: it sends only its difference
            self.session.send_query_batch(self, [], True, paced=True)
        held, self.held, self.held_bytes = self.held, [], 0
        self.loading = False
        if held:
            self.offer(held)
        return not self.loading

    # -- live -----------------------------------------------------------------------------

    def offer(self, rows: list[JournalRow]) -> None:
        """Rows of this query's topic that the index matched to it (never awaits)."""
        if self.closed:
            return
        if self.loading:
            self.held.extend(rows)
            self.held_bytes += sum(r.weight for r in rows)
            if (
                len(self.held) > TOPICS[self.topic].replay_budget
                or self.held_bytes > self.session.limits.max_queued_bytes
            ):
                self.session.slow_consumer()
            return
        fresh = [r for r in rows if r.watermark > self.after]
        if not fresh:
            return
        self.after = max(r.watermark for r in fresh)
        p = self.session.principal
        assert p is not None
        if self.scope.kind != "list":
            # A document or stream query is sent every visible row of its scope in order,
            # after loading the scope's documents at a head below them (or resuming at a
            # cursor): the base of a row's patch is always what the client was last sent.
            out = [
                _upsert(r, patched=True)
                if r.payload is not None
                else remove_update(self.topic, r.doc_key, r.doc_version, r.watermark, True)
                for r in fresh
                if r.visible_to(p.user_id, p.org_id)
            ]
            if out:
                self.session.send_query_batch(self, out, True)
            return
        self._offer_list(fresh, p.user_id, p.org_id)

    def _offer_list(self, rows: list[JournalRow], user_id: str, org_id: str | None) -> None:
        s, index = self.scope, self.session.hub.queries
        before = {k: m.version for k, m in self.members.items()}
        latest: dict[str, JournalRow] = {}
        uncertain = False
        prefix = TOPICS[self.topic].doc_prefix
        for r in rows:
            if not r.doc_key.startswith(prefix):
                continue
            payload = _parse(r) if r.payload is not None else None
            fits = (
                payload is not None
                and r.visible_to(user_id, org_id)
                and all(field_text(payload, k) == v for k, v in s.where)
            )
            old = self.members.get(r.doc_key)
            if fits:
                assert payload is not None
                key = order_key(payload, r.doc_key, s.order_by, s.ascending)
                if old is not None and not self.complete and old.key < key:
                    uncertain = True  # it sank: a document the server does not hold may pass it
                self.members[r.doc_key] = _Member(key, r.doc_version)
                latest[r.doc_key] = r
            elif old is not None:
                del self.members[r.doc_key]
                latest[r.doc_key] = r
                if not self.complete:
                    uncertain = True  # a slot opened that an unseen document may fill
        if len(self.members) > s.limit:
            ranked = sorted(self.members.items(), key=lambda kv: kv[1].key)
            for k, _ in ranked[s.limit :]:
                del self.members[k]
            self.complete = False
        out: list[dict[str, Any]] = []
        for k in set(before) | set(latest):
            m = self.members.get(k)
            if m is None and k in before:
                gone = latest.get(k)
                out.append(
                    remove_update(
                        self.topic,
                        k,
                        before[k],
                        gone.watermark if gone else self.after,
                        gone is not None and gone.payload is None,
                    )
                )
            elif m is not None and k in latest and before.get(k) != m.version:
                # A patch only for a member the client holds at exactly the patch's base;
                # a document entering the list goes whole.
                row = latest[k]
                out.append(_upsert(row, patched=k in before and before[k] == row.base_version))
        index.members_changed(self, set(before), set(self.members))
        if out:
            self.session.send_query_batch(self, out, True)
        if uncertain:
            self.loading = True
            index.watch_topic(self)
            self.task = asyncio.create_task(self._load())

    def close(self) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()


def _pages(updates: list[dict[str, Any]], rows: int, max_bytes: int) -> list[list[dict[str, Any]]]:
    """Updates cut into frames of at most `rows` updates and about `max_bytes` (half the
    socket's byte cap, as whole-topic replay pages are): one update always makes a page."""
    pages: list[list[dict[str, Any]]] = []
    page: list[dict[str, Any]] = []
    size = 0
    for u in updates:
        weight = len(orjson.dumps(u))
        if page and (len(page) >= rows or size + weight > max_bytes):
            pages.append(page)
            page, size = [], 0
        page.append(u)
        size += weight
    if page:
        pages.append(page)
    return pages


def _parse(r: JournalRow) -> dict[str, Any]:
    doc = orjson.loads(r.payload or "{}")
    return doc if isinstance(doc, dict) else {}


def _upsert(r: JournalRow, patched: bool = False) -> dict[str, Any]:
    return {**r.wire(patched), "op": "upsert"}


def remove_update(
    topic: str, doc_key: str, version: int, watermark: int, deleted: bool = False
) -> dict[str, Any]:
    return {
        "topic": topic, "watermark": watermark, "doc_key": doc_key, "doc_version": version,
        "payload": None, "payload_hash": None, "deleted": deleted, "op": "remove",
    }  # fmt: skip


class QueryIndex:
    """The hub's index of live queries: which ones a committed row concerns."""

    def __init__(self) -> None:
        self.by_doc: dict[tuple[str, str], set[LiveQuery]] = {}
        self.by_stream: dict[tuple[str, str], set[LiveQuery]] = {}
        # topic -> filter field names -> their values -> lists
        self.lists: dict[str, dict[tuple[str, ...], dict[tuple[str | None, ...], set[LiveQuery]]]] = {}
        self.members: dict[tuple[str, str], set[LiveQuery]] = {}
        self.loading_lists: dict[str, set[LiveQuery]] = {}  # take every row of the topic
        self.count = 0

    def add(self, q: LiveQuery) -> None:
        s, t = q.scope, q.topic
        self.count += 1
        if s.kind == "doc":
            self.by_doc.setdefault((t, s.doc_key), set()).add(q)
        elif s.kind == "stream":
            self.by_stream.setdefault((t, s.stream), set()).add(q)
        else:
            names = tuple(k for k, _ in s.where)
            values = tuple(v for _, v in s.where)
            self.lists.setdefault(t, {}).setdefault(names, {}).setdefault(values, set()).add(q)
            self.watch_topic(q)

    def remove(self, q: LiveQuery) -> None:
        s, t = q.scope, q.topic
        self.count -= 1
        if s.kind == "doc":
            _discard(self.by_doc, (t, s.doc_key), q)
        elif s.kind == "stream":
            _discard(self.by_stream, (t, s.stream), q)
        else:
            names = tuple(k for k, _ in s.where)
            groups = self.lists.get(t, {})
            _discard(groups.get(names, {}), tuple(v for _, v in s.where), q)
            if names in groups and not groups[names]:
                del groups[names]
            if t in self.lists and not self.lists[t]:
                del self.lists[t]
            self.members_changed(q, set(q.members), set())
            _discard(self.loading_lists, t, q)

    def watch_topic(self, q: LiveQuery) -> None:
        self.loading_lists.setdefault(q.topic, set()).add(q)

    def members_changed(self, q: LiveQuery, before: set[str], after: set[str]) -> None:
        for k in before - after:
            _discard(self.members, (q.topic, k), q)
        for k in after - before:
            self.members.setdefault((q.topic, k), set()).add(q)

    def match(self, rows: Iterable[JournalRow]) -> dict[LiveQuery, list[JournalRow]]:
        """Each row to the queries it concerns: cost per row is the lookups plus the matches."""
        out: dict[LiveQuery, list[JournalRow]] = {}
        for r in rows:
            hits: set[LiveQuery] = set()
            hits.update(self.by_doc.get((r.topic, r.doc_key), ()))
            hits.update(self.by_stream.get((r.topic, stream_of(r.doc_key)), ()))
            hits.update(self.members.get((r.topic, r.doc_key), ()))
            hits.update(self.loading_lists.get(r.topic, ()))
            groups = self.lists.get(r.topic)
            if groups and r.payload is not None and r.doc_key.startswith(TOPICS[r.topic].doc_prefix):
                payload = _parse(r)
                for names, by_values in groups.items():
                    hits.update(by_values.get(tuple(field_text(payload, n) for n in names), ()))
            for q in hits:
                out.setdefault(q, []).append(r)
        return out

    def loaded(self, q: LiveQuery) -> None:
        _discard(self.loading_lists, q.topic, q)


def _discard(d: dict[Any, set[LiveQuery]], key: Any, q: LiveQuery) -> None:
    group = d.get(key)
    if group is not None:
        group.discard(q)
        if not group:
            del d[key]
