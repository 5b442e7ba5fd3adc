"""The pruner: enforce each topic's retention and replay budget on the stream journal.

A resume replays journal rows after a client's watermark. Rows older than the topic's
retention, or further behind the head than its replay budget, will never be replayed (the
sync server answers such a cursor with `stale_cursor` and a full resync), so they can go.
`retention_floor` then records the lowest watermark a client may still resume from.
The projector runs this (it is the only writer of the `khala` schema), through Khala's
store (`oa.khala.store.maintenance`), with each topic's declared policy.
"""

from __future__ import annotations

import asyncpg

from oa.khala.store.maintenance import PruneResult, new_floor, prune_topic
from oa.khala.topics import TOPICS

__all__ = ["PruneResult", "new_floor", "prune"]


async def prune(conn: asyncpg.Connection, topic: str, retention_s: int | None = None) -> PruneResult:
    """Delete journal rows of `topic` below its new floor and raise the floor, atomically.

    `retention_s` overrides the topic's retention (shorter only), e.g. to prune eagerly.
    """
    policy = TOPICS.get(topic)
    if policy is None:
        raise ValueError(f"unknown topic {topic!r}; known: {', '.join(TOPICS)}")
    keep_s = policy.retention_s if retention_s is None else min(retention_s, policy.retention_s)
    return await prune_topic(conn, topic, keep_s, policy.replay_budget)
