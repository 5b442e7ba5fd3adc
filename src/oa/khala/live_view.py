"""A live query's client side: the current result of one subscription, kept exact by the
server's updates, with change callbacks (used by `KhalaClient.watch`).

A list's (re)subscribe replays its whole current content: at `replay_complete` the view
drops what it holds that the replay did not name. Updates not newer than what the view
holds are dropped, so a resume never applies anything twice.

An update may be a patch against the version held (`oa.khala.deltas`): applied and checked
by hash. When the base is not held or the hash differs, the view keeps what it has and
names the key for a `fetch`; the `documents` answer brings the whole document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oa.khala import deltas
from oa.khala.sync.live import order_key

# {"sub", "op": "upsert" | "remove", "doc_key", "doc_version", "payload"}
Change = dict[str, Any]
ChangeListener = Callable[[Change], None]


@dataclass
class LiveView:
    sub: str
    topic: str
    scope: dict[str, Any]
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)  # doc_key -> update as applied
    watermark: int | None = None  # this subscription's own cursor (resume_after)
    applied: int = 0
    dropped_stale: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    listeners: list[ChangeListener] = field(default_factory=list)
    live: asyncio.Event = field(default_factory=asyncio.Event)
    patches_applied: int = 0
    missing_base: int = 0  # patches whose base the view did not hold
    hash_mismatches: int = 0  # patches whose result hashed differently
    fetched: int = 0  # whole documents taken from `documents` answers
    # doc_key -> the newest version skipped while its fetch is pending (0: none yet)
    fetching: dict[str, int] = field(default_factory=dict)
    _replayed: set[str] | None = None

    @property
    def is_list(self) -> bool:
        return "doc_key" not in self.scope and "stream" not in self.scope

    def on_change(self, listener: ChangeListener) -> None:
        self.listeners.append(listener)

    def results(self) -> list[dict[str, Any]]:
        """The payloads in the list's order (doc_key order for a document or a stream)."""
        if not self.is_list:
            return [self.documents[k]["payload"] for k in sorted(self.documents)]
        order_by = self.scope.get("order_by") or "last_event_at"
        asc = bool(self.scope.get("ascending"))
        ranked = sorted(
            self.documents.items(), key=lambda kv: order_key(kv[1]["payload"], kv[0], order_by, asc)
        )
        return [d["payload"] for _, d in ranked]

    def subscribe_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "subscribe",
            "sub": self.sub,
            "topic": self.topic,
            "scope": self.scope,
        }
        if self.watermark is not None and not self.is_list:
            frame["resume_after"] = {self.topic: self.watermark}
        self.live.clear()
        self._replayed = set() if self.is_list else None
        self.fetching.clear()  # a new socket: answers to the old one's fetches never come
        return frame

    def apply(self, frame: dict[str, Any]) -> list[str]:
        """Apply an update_batch; returns the keys to `fetch` (patches it could not apply)."""
        need: list[str] = []
        for u in frame.get("updates", []):
            key = u["doc_key"]
            if self._replayed is not None and u.get("op") != "remove":
                self._replayed.add(key)
            if self._apply_update(u) == "fetch" and key not in self.fetching:
                self.fetching[key] = 0
                need.append(key)
        self._complete(frame)
        return need

    def apply_documents(self, frame: dict[str, Any]) -> list[str]:
        """Apply a `documents` answer (whole documents; no cursor moves); returns keys to
        fetch again (a newer patch was skipped meanwhile that the answer does not cover)."""
        again: list[str] = []
        for u in frame.get("documents", []):
            key = u["doc_key"]
            skipped = self.fetching.pop(key, None)
            if u.get("op") == "remove":
                if skipped is not None and key in self.documents:
                    gone = self.documents.pop(key)
                    self._emit("remove", key, gone["doc_version"], None)
                continue
            self.fetched += 1
            self._apply_update(u)
            held = self.documents.get(key)
            if skipped and (held is None or held["doc_version"] < skipped):
                self.fetching[key] = 0
                again.append(key)
        return again

    def _apply_update(self, u: dict[str, Any]) -> str:
        """ "applied", "stale", "removed" or "fetch" (a patch that could not apply)."""
        key = u["doc_key"]
        held = self.documents.get(key)
        if u.get("op") == "remove" or u.get("deleted"):
            if held is not None:
                del self.documents[key]
                self._emit("remove", key, u["doc_version"], None)
            return "removed"
        if held is not None and (held.get("projection_version") or 0, held["doc_version"]) >= (
            u.get("projection_version") or 0,
            u["doc_version"],
        ):
            self.dropped_stale += 1
            return "stale"
        if deltas.is_patch(u):
            if key in self.fetching:  # its whole document is on the way
                self.fetching[key] = max(self.fetching[key], u["doc_version"])
                return "fetch"
            if held is None or not deltas.holds_base(
                u, held.get("projection_version") or 0, held["doc_version"]
            ):
                self.missing_base += 1
                return "fetch"
            payload = deltas.patched(held["payload"], u)
            if payload is None:
                self.hash_mismatches += 1
                return "fetch"
            self.patches_applied += 1
            u = {**u, "payload": payload, "patch": None, "base_version": None}
        self.documents[key] = u
        self._emit("upsert", key, u["doc_version"], u.get("payload"))
        return "applied"

    def _complete(self, frame: dict[str, Any]) -> None:
        if frame.get("replay_complete"):
            if self._replayed is not None:
                for key in [k for k in self.documents if k not in self._replayed]:
                    gone = self.documents.pop(key)
                    self._emit("remove", key, gone["doc_version"], None)
                self._replayed = None
            head = (frame.get("head_watermarks") or {}).get(self.topic)
            if isinstance(head, int):
                self.watermark = max(self.watermark or 0, head)
            self.live.set()

    def _emit(self, op: str, key: str, version: int, payload: Any) -> None:
        self.applied += 1
        change = {"sub": self.sub, "op": op, "doc_key": key, "doc_version": version, "payload": payload}
        for listener in self.listeners:
            listener(change)
