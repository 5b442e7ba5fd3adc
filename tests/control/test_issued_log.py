"""The issued-token log commits bursts of mints together, and answers only after COMMIT."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from oa.control.service.issued_log import IssuedLog, IssuedRow
from oa.store.database import Database
from tests.control.conftest import NewUser


async def test_a_burst_shares_commits_and_every_row_lands(db: Database, new_user: NewUser) -> None:
    user = await new_user()
    log = IssuedLog(db)
    log.start()
    now = datetime.now(UTC)
    rows = [
        IssuedRow(
            uuid.uuid4().hex,
            user["session"]["session_id"],
            user["user_id"],
            "oa-khala-sync",
            ["runtime.notifications", "runtime.run_summaries"],
            "kid",
            now,
            now + timedelta(seconds=300),
        )
        for _ in range(200)
    ]
    await asyncio.gather(*(log.record(r) for r in rows))
    await log.stop()
    assert log.commits < 50, log.commits
    stored = await db.fetch(
        "SELECT jti, scopes FROM control.issued_tokens WHERE jti = ANY($1::text[])", [r.jti for r in rows]
    )
    assert len(stored) == 200
    assert all(list(s["scopes"]) == ["runtime.notifications", "runtime.run_summaries"] for s in stored)


async def test_a_failed_commit_fails_the_mint(db: Database) -> None:
    log = IssuedLog(db)
    log.start()
    now = datetime.now(UTC)
    bad = IssuedRow("x" + uuid.uuid4().hex, "no-such-session", "u", "a", [], "k", now, now)
    try:
        await log.record(bad)
    except Exception as exc:
        assert "foreign key" in str(exc).lower()
    else:
        raise AssertionError("a row that cannot be stored was acknowledged")
    finally:
        await log.stop()


async def test_concurrent_mints_over_http(
    new_user: NewUser, control: httpx.AsyncClient, db: Database
) -> None:
    user = await new_user()
    replies = await asyncio.gather(
        *(control.post("/api/sync/token", headers=user["headers"]) for _ in range(40))
    )
    assert all(r.status_code == 200 for r in replies)
    jtis = {r.json()["jti"] for r in replies}
    count = await db.fetchval(
        "SELECT count(*) FROM control.issued_tokens WHERE jti = ANY($1::text[])", list(jtis)
    )
    assert len(jtis) == 40 and count == 40
