"""A run's (and a worker's) org comes from the caller signature, never from a payload.

Issue 10: a caller signed as a user of org B appended `run.started {"org_id": "<org A>"}`
and the run appeared on org A's screens. Each append path is tried: the fast path and the
full app (the same app with the fast path taken out).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import orjson
import pytest
from typer.testing import CliRunner

from oa.bootstrap import services
from oa.cli.main import app as cli
from oa.runtime.api.fastpath import AppendFastPath
from oa.runtime.projector.projector import project_batch
from oa.runtime.settings import RuntimeSettings
from oa.runtime.signing import verify_caller
from oa.store.database import Database, with_user
from oa.store.privileges import WRITER
from tests.conftest import SECRET, Signer
from tests.support.servers import serve_in_loop

ORG_A, ORG_B = "org_aaaa", "org_bbbb"


@pytest.fixture(scope="module", params=["fast path", "full app"])
async def runtime(
    request: pytest.FixtureRequest, database_url: str, runtime_settings: RuntimeSettings
) -> AsyncIterator[str]:
    app = services.runtime_app(database_url, runtime_settings)
    if request.param == "full app":
        app.user_middleware = [m for m in app.user_middleware if cast(object, m.cls) is not AppendFastPath]
    async with serve_in_loop(app) as url:
        yield url


def _rid() -> str:
    return f"org-{uuid.uuid4().hex[:12]}"


async def _post(url: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as h:
        return await h.post(path, json=body)


async def _stored(db: Database, kind: str, stream_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT event_type, payload FROM runtime.events WHERE stream_kind = $1 AND stream_id = $2 ORDER BY seq",
        kind,
        stream_id,
    )
    return [{"type": r["event_type"], **orjson.loads(r["payload"])} for r in rows]


async def _khala_org(database_url: str, doc_key: str) -> str | None:
    """Project what is in the journal, then the org the document is shown to (None: owner only)."""
    conn = await asyncpg.connect(with_user(database_url, WRITER))
    try:
        while await project_batch(conn):
            pass
        org: str | None = await conn.fetchval(
            "SELECT d.org_id FROM khala.documents d JOIN khala.state s ON s.live_generation = d.generation"
            " WHERE d.doc_key = $1",
            doc_key,
        )
        return org
    finally:
        await conn.close()


async def test_a_claimed_foreign_org_is_refused_and_nothing_is_written(
    runtime: str, sign: Signer, db: Database, database_url: str
) -> None:
    rid = _rid()
    started = {"event_type": "run.started", "payload": {"model": "m", "org_id": ORG_A}}
    r = await _post(runtime, f"/internal/v1/runs/{rid}/events", started, sign("user:b1", ORG_B))
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "forbidden"
    assert ORG_A in err["message"] and ORG_B in err["message"]
    # The whole batch is refused, whatever else is in it.
    batch = {"events": [{"event_type": "text.delta", "payload": {"text": "hi"}}, started]}
    r = await _post(runtime, f"/internal/v1/runs/{rid}/events/batch", batch, sign("user:b1", ORG_B))
    assert r.status_code == 403 and "the batch wrote nothing" in r.json()["error"]["message"]
    # A signature without an org cannot claim one either.
    r = await _post(runtime, f"/internal/v1/runs/{rid}/events", started, sign("user:b1"))
    assert r.status_code == 403 and "carries no org" in r.json()["error"]["message"]
    assert await _stored(db, "run", rid) == []
    assert await db.fetchval("SELECT count(*) FROM runtime.runs WHERE run_id = $1", rid) == 0
    assert await _khala_org(database_url, f"runtime/run_summary:{rid}") is None


async def test_a_matching_claim_is_kept_and_a_missing_one_is_stamped(
    runtime: str, sign: Signer, db: Database, database_url: str
) -> None:
    claimed, stamped = _rid(), _rid()
    r = await _post(
        runtime,
        f"/internal/v1/runs/{claimed}/events",
        {"event_type": "run.started", "payload": {"org_id": ORG_A}},
        sign("user:a1", ORG_A),
    )
    assert r.status_code == 201, r.text
    r = await _post(
        runtime,
        f"/internal/v1/runs/{stamped}/events",
        {"event_type": "run.started", "payload": {"model": "m"}},
        sign("user:a1", ORG_A),
    )
    assert r.status_code == 201, r.text
    assert await _stored(db, "run", stamped) == [{"type": "run.started", "model": "m", "org_id": ORG_A}]
    for rid in (claimed, stamped):
        assert await db.fetchval("SELECT org_id FROM runtime.runs WHERE run_id = $1", rid) == ORG_A
        assert await _khala_org(database_url, f"runtime/run_summary:{rid}") == ORG_A


async def test_a_runs_org_is_fixed_by_its_first_run_started(runtime: str, sign: Signer, db: Database) -> None:
    rid = _rid()
    path = f"/internal/v1/runs/{rid}/events"
    started = {"event_type": "run.started", "payload": {}}
    assert (await _post(runtime, path, started, sign("user:ab", ORG_B))).status_code == 201
    # The same user, now signed for another of their orgs, cannot move the run there.
    moved = {"event_type": "run.started", "payload": {"org_id": ORG_A}}
    r = await _post(runtime, path, moved, sign("user:ab", ORG_A))
    assert r.status_code == 403 and f"belongs to org {ORG_B!r}" in r.json()["error"]["message"]
    r = await _post(runtime, path, started, sign("user:ab", ORG_A))  # stamping would move it too
    assert r.status_code == 403
    # Events that name no org still go through (the owner is the same principal).
    delta = {"event_type": "text.delta", "payload": {"text": "x"}}
    assert (await _post(runtime, path, delta, sign("user:ab", ORG_A))).status_code == 201
    assert [e["type"] for e in await _stored(db, "run", rid)] == ["run.started", "text.delta"]
    assert await db.fetchval("SELECT org_id FROM runtime.runs WHERE run_id = $1", rid) == ORG_B


async def test_service_principals_act_for_an_org_only_if_signed_for_it(runtime: str, sign: Signer) -> None:
    path = f"/internal/v1/runs/{_rid()}/events"
    started = {"event_type": "run.started", "payload": {"org_id": ORG_A}}
    assert (await _post(runtime, path, started, sign("service:codex"))).status_code == 403
    assert (await _post(runtime, path, started, sign("service:codex", ORG_A))).status_code == 201


async def test_a_workers_org_comes_from_the_signature(
    runtime: str, sign: Signer, db: Database, database_url: str
) -> None:
    wid = f"wkr-{uuid.uuid4().hex[:12]}"
    create = "/internal/v1/codex/workers"
    r = await _post(runtime, create, {"worker_id": wid, "org_id": ORG_A}, sign("user:b1", ORG_B))
    assert r.status_code == 403 and ORG_A in r.json()["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM runtime.codex_workers WHERE worker_id = $1", wid) == 0
    r = await _post(runtime, create, {"worker_id": wid}, sign("user:b1", ORG_B))
    assert r.status_code == 201, r.text
    assert (await _stored(db, "worker", wid))[0]["org_id"] == ORG_B
    assert await _khala_org(database_url, f"runtime/codex_worker_summary:{wid}") == ORG_B
    # Reattaching, or a worker.started event, for another org is refused.
    r = await _post(runtime, create, {"worker_id": wid}, sign("user:b1", ORG_A))
    assert r.status_code == 403 and f"belongs to org {ORG_B!r}" in r.json()["error"]["message"]
    event = {"event_type": "worker.started", "payload": {"status": "running", "org_id": ORG_A}}
    r = await _post(runtime, f"{create}/{wid}/events", event, sign("user:b1", ORG_B))
    assert r.status_code == 403
    assert len(await _stored(db, "worker", wid)) == 1


# -- `oa token runtime --org`: control's memberships decide ---------------------------------


@pytest.fixture
async def member(db: Database) -> tuple[str, str, str]:
    """A user who is a member of one fresh org, and another org they are not in."""
    tag = uuid.uuid4().hex[:8]
    user, mine, other = f"u_{tag}", f"org_m{tag}", f"org_o{tag}"
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO control.users (user_id, email) VALUES ($1, $2)", user, f"{tag}@x.test"
        )
        for org in (mine, other):
            await conn.execute("INSERT INTO control.orgs (org_id, name) VALUES ($1, $1)", org)
        await conn.execute(
            "INSERT INTO control.memberships (org_id, user_id, sync_scopes) VALUES ($1, $2, '{}')", mine, user
        )
    return user, mine, other


def test_token_runtime_org_is_checked_against_memberships(
    member: tuple[str, str, str], database_url: str, tmp_path: Path
) -> None:
    user, mine, other = member
    env = {
        "OA_DATABASE_URL": database_url,
        "OA_RUNTIME_CALLER_SECRET": SECRET.decode(),
        "OA_HOME": str(tmp_path),
    }
    runner = CliRunner()
    refused = runner.invoke(cli, ["token", "runtime", "--user", user, "--org", other], env=env)
    assert refused.exit_code == 1, refused.output
    assert "not a member" in refused.output and other in refused.output
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    ok = runner.invoke(cli, ["token", "runtime", "--user", user, "--org", mine], env=env)
    assert ok.exit_code == 0, ok.output
    caller = verify_caller(SECRET, ok.stdout.strip())
    assert (caller.principal, caller.org) == (f"user:{user}", mine)
    plain = runner.invoke(cli, ["token", "runtime", "--user", user], env=env)
    assert plain.exit_code == 0 and verify_caller(SECRET, plain.stdout.strip()).org is None
