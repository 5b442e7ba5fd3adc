"""The Khala nodes that are up, as Postgres sees them: each names itself in the
`application_name` of its connections (`oa.khala.sync.node`), and a node that dies loses
its connections, so what `pg_stat_activity` lists is exactly the live ones.

Read as `oa_khala_reader`, the role the nodes connect as: Postgres shows a role every column
of its own sessions (`backend_start` included) without `pg_read_all_stats`
(tests/khala/test_nodes.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from oa.khala.sync.node import PREFIX, parse_application_name


@dataclass(frozen=True)
class NodeSeen:
    node_id: str
    url: str
    since: datetime | None  # its oldest connection's start
    connections: int


async def live_nodes(conn: asyncpg.Connection) -> list[NodeSeen]:
    rows = await conn.fetch(
        "SELECT application_name, min(backend_start) AS since, count(*) AS n FROM pg_stat_activity"
        " WHERE datname = current_database() AND starts_with(application_name, $1)"
        " GROUP BY application_name ORDER BY application_name",
        PREFIX,
    )
    seen = []
    for r in rows:
        parsed = parse_application_name(r["application_name"])
        if parsed is not None:
            seen.append(NodeSeen(parsed[0], parsed[1], r["since"], int(r["n"])))
    return seen
