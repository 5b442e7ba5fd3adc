"""The pruner: enforce each topic's retention and replay budget on the stream journal.

A resume replays journal rows after a client's watermark. Rows older than the topic's
retention, or further behind the head than its replay budget, will never be replayed (the
sync server answers such a cursor with `stale_cursor` and a full resync), so they can go.
`retention_floor` then records the lowest watermark a client may still resume from.
The projector runs this (it is the only writer of the `khala` schema), when asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from oa.khala.topics import TOPICS


def new_floor(head: int, floor: int, replay_budget: int, expired_upto: int) -> int:
    """The retention floor after a prune: never lower than before, never above the head.

    `expired_upto` is the highest watermark committed before the retention cutoff (0 if none).
    """
    return max(floor, min(head, max(expired_upto, head - replay_budget)))


@dataclass(frozen=True)
class PruneResult:
    topic: str
    head: int
    floor_before: int
    floor_after: int
    deleted: int

    def json(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "head": self.head,
            "retention_floor_before": self.floor_before,
            "retention_floor_after": self.floor_after,
            "deleted_rows": self.deleted,
        }


async def prune(conn: asyncpg.Connection, topic: str, retention_s: int | None = None) -> PruneResult:
    """Delete journal rows of `topic` below its new floor and raise the floor, atomically.

    `retention_s` overrides the topic's retention (shorter only), e.g. to prune eagerly.
    """
    policy = TOPICS.get(topic)
    if policy is None:
        raise ValueError(f"unknown topic {topic!r}; known: {', '.join(TOPICS)}")
    keep_s = policy.retention_s if retention_s is None else min(retention_s, policy.retention_s)
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT watermark, retention_floor FROM khala.topic_heads WHERE topic = $1 FOR UPDATE", topic
        )
        if row is None:
            return PruneResult(topic, 0, 0, 0, 0)
        head, floor = int(row["watermark"]), int(row["retention_floor"])
        expired = await conn.fetchval(
            "SELECT max(watermark) FROM khala.stream_journal"
            " WHERE topic = $1 AND committed_at < now() - make_interval(secs => $2)",
            topic,
            float(keep_s),
        )
        after = new_floor(head, floor, policy.replay_budget, int(expired or 0))
        status = await conn.execute(
            "DELETE FROM khala.stream_journal WHERE topic = $1 AND watermark <= $2", topic, after
        )
        await conn.execute("UPDATE khala.topic_heads SET retention_floor = $2 WHERE topic = $1", topic, after)
    return PruneResult(topic, head, floor, after, int(status.split()[-1]))
