"""The topic catalog: what clients can subscribe to, how long it is kept, how far a resume
may replay. Topics are the coarse scopes a sync token carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    doc_prefix: str
    retention_s: int
    replay_budget: int  # journal rows a resume may replay before a full resync is cheaper
    queryable: tuple[str, ...] = ()  # document fields a live-query list may filter on (equality)
    orderable: tuple[str, ...] = ()  # document fields a live-query list may be ordered by


HOUR = 3600
TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic(
            "runtime.run_summaries",
            "runtime/run_summary:",
            7 * 24 * HOUR,
            20_000,
            ("owner", "org_id", "status"),
            ("last_event_at", "created_at"),
        ),
        Topic(
            "runtime.codex_worker_summaries",
            "runtime/codex_worker_summary:",
            3 * 24 * HOUR,
            10_000,
            ("owner", "status"),
            ("last_event_at", "created_at"),
        ),
        Topic("runtime.codex_worker_events", "runtime/codex_worker_event:", 24 * HOUR, 3_000),
        Topic("runtime.notifications", "runtime/notification:", 12 * HOUR, 500),
    )
}
TOPIC_NAMES = tuple(TOPICS)
