"""Operator requests (rebuild, prune, audit) that the Khala admin API records.

The admin API runs in the sync server, whose database role cannot write `khala`; it only
appends a pending request. The projector, Khala's single writer, claims pending requests
between batches through Khala's store (`oa.khala.store.requests`), executes them on its
own connection and writes the result back.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from oa.khala.store import requests

log = logging.getLogger(__name__)
MAX_DRIFT_LISTED = 50


async def _execute(conn: asyncpg.Connection, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    from oa.runtime.projector.prune import prune
    from oa.runtime.projector.rebuild import audit, rebuild

    if kind == "prune":
        result = await prune(conn, str(args.get("topic", "")), args.get("retention_s"))
        return result.json()
    if kind in ("rebuild", "audit"):
        report = await (rebuild(conn) if kind == "rebuild" else audit(conn))
        return {
            "documents": report.documents,
            "events": report.events,
            "drift_count": len(report.drift),
            "drift": report.drift[:MAX_DRIFT_LISTED],
        }
    raise ValueError(f"unknown request kind {kind!r}")


async def run_pending_requests(conn: asyncpg.Connection, limit: int = 10) -> int:
    """Claim and execute up to `limit` pending requests; returns how many ran."""
    ran = 0
    while ran < limit:
        req = await requests.claim(conn)
        if req is None:
            return ran
        try:
            result, status = await _execute(conn, req.kind, req.args), "done"
        except Exception as exc:  # the request failed, not the projector: report it
            log.warning("khala request %s (%s) failed: %s", req.id, req.kind, exc)
            result, status = {"error": str(exc)}, "failed"
        await requests.finish(conn, req.id, status, result)
        ran += 1
    return ran
