"""Which Khala process this is: its node id, its own URL, its pid and start time.

Nodes hold no state of their own, so nothing registers them: each one names itself in the
`application_name` of its Postgres connections (`oa-khala:<node id>:<url>`), and
`oa khala status` lists the names `pg_stat_activity` shows. A node that dies closes its
connections, and with them its entry; there is nothing to clean up.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

PREFIX = "oa-khala:"
MAX_APPLICATION_NAME = 63  # bytes Postgres keeps (NAMEDATALEN - 1); longer names are cut


@dataclass(frozen=True)
class Node:
    id: str
    url: str  # where this process itself answers (its own port when several share one)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)

    @property
    def application_name(self) -> str:
        name = f"{PREFIX}{self.id}:{self.url}"
        if len(name.encode()) > MAX_APPLICATION_NAME:
            raise ValueError(
                f"{name!r} is longer than the {MAX_APPLICATION_NAME} bytes Postgres keeps of an "
                "application_name: choose a shorter node id (--node-id)"
            )
        return name


def parse_application_name(name: str) -> tuple[str, str] | None:
    """(node id, url) from a connection's application_name, None if it is not a node's."""
    if not name.startswith(PREFIX):
        return None
    node_id, sep, url = name[len(PREFIX) :].partition(":")
    if not sep or not node_id or not url:
        return None
    return node_id, url
