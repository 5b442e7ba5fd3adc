"""Khala's upkeep: pruning the stream journal, and what the projector's status reads."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


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


async def prune_topic(conn: asyncpg.Connection, topic: str, keep_s: int, replay_budget: int) -> PruneResult:
    """Delete journal rows of `topic` below its new floor and raise the floor, atomically."""
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
        after = new_floor(head, floor, replay_budget, int(expired or 0))
        status = await conn.execute(
            "DELETE FROM khala.stream_journal WHERE topic = $1 AND watermark <= $2", topic, after
        )
        await conn.execute("UPDATE khala.topic_heads SET retention_floor = $2 WHERE topic = $1", topic, after)
    return PruneResult(topic, head, floor, after, int(status.split()[-1]))


@dataclass(frozen=True)
class ProjectionState:
    """A projection's checkpoint in the live generation, and its build if one runs."""

    projection: str
    position: int
    version: int | None
    failed_at: int | None
    error: str | None
    build_position: int | None = None  # set while a per-projection build catches up
    build_version: int | None = None
    build_error: str | None = None


async def projection_states(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, ProjectionState]:
    rows = await conn.fetch(
        "SELECT coalesce(c.projection, b.projection) AS projection, c.position, c.version,"
        " c.failed_at_position, c.error, b.position AS b_position, b.version AS b_version, b.error AS b_error"
        " FROM (SELECT c.* FROM khala.checkpoints c JOIN khala.state s ON s.live_generation = c.generation) c"
        " FULL JOIN (SELECT b.* FROM khala.checkpoints b JOIN khala.state s ON s.live_generation = b.builds_into) b"
        " ON b.projection = c.projection"
    )
    return {
        r["projection"]: ProjectionState(
            r["projection"],
            int(r["position"] or 0),
            r["version"],
            r["failed_at_position"],
            r["error"],
            r["b_position"],
            r["b_version"],
            r["b_error"],
        )
        for r in rows
    }
