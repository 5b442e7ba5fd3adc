"""The pruner: floor selection (pure) and the SQL on a database of its own."""

from __future__ import annotations

import asyncpg
import pytest

from oa.khala.topics import TOPICS
from oa.runtime.projector.prune import new_floor, prune
from oa.store import migrate
from oa.store.database import with_user
from tests.support.pg import fresh_database


@pytest.mark.parametrize(
    ("head", "floor", "budget", "expired", "expected"),
    [
        (100, 0, 500, 0, 0),  # within budget, nothing old: keep all
        (1000, 0, 500, 0, 500),  # beyond the replay budget
        (1000, 0, 500, 800, 800),  # older than retention wins when higher
        (1000, 900, 500, 100, 900),  # never lowered
        (10, 0, 5, 50, 10),  # never above the head
    ],
)
def test_new_floor(head: int, floor: int, budget: int, expired: int, expected: int) -> None:
    assert new_floor(head, floor, budget, expired) == expected


async def test_prune_deletes_below_the_floor_and_raises_it() -> None:
    topic = "runtime.notifications"
    budget = TOPICS[topic].replay_budget
    with fresh_database() as url:
        migrate(url)
        conn = await asyncpg.connect(with_user(url, "oa_khala_writer"))
        try:
            n = budget + 100
            await conn.execute(
                "INSERT INTO khala.stream_journal (topic, watermark, batch_id, doc_key, doc_version, committed_at)"
                " SELECT $1, w, w, 'runtime/notification:' || w, 1,"
                "   now() - CASE WHEN w <= 30 THEN interval '13 hours' ELSE interval '1 minute' END"
                " FROM generate_series(1, $2::int) w",
                topic,
                n,
            )
            await conn.execute("INSERT INTO khala.topic_heads (topic, watermark) VALUES ($1, $2)", topic, n)
            result = await prune(conn, topic)
            assert (result.floor_before, result.floor_after, result.deleted) == (0, 100, 100)
            assert (
                await conn.fetchval("SELECT min(watermark) FROM khala.stream_journal WHERE topic = $1", topic)
                == 101
            )
            assert (
                await conn.fetchval("SELECT retention_floor FROM khala.topic_heads WHERE topic = $1", topic)
                == 100
            )
            again = await prune(conn, topic)
            assert again.deleted == 0 and again.floor_after == 100
            eager = await prune(conn, topic, retention_s=30)  # everything is older than 30 s
            assert eager.floor_after == n and eager.deleted == budget
            with pytest.raises(ValueError, match="unknown topic"):
                await prune(conn, "nope")
        finally:
            await conn.close()
