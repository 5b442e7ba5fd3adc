"""The projector against real Postgres: folds, atomic batches, roles, rebuild, audit."""

from __future__ import annotations

import asyncpg
import httpx
import orjson
import pytest

from oa.catalog import ProjectionDecl
from oa.runtime.domain.journal import Event
from oa.runtime.projector.projections import PROJECTIONS, Projection
from oa.runtime.projector.projector import project_batch
from oa.runtime.projector.rebuild import audit, rebuild, reset
from tests.conftest import Signer


async def catch_up(conn: asyncpg.Connection, **kw: object) -> None:
    while await project_batch(conn, **kw):  # type: ignore[arg-type]
        pass


async def doc(conn: asyncpg.Connection, key: str) -> dict[str, object] | None:
    row = await conn.fetchrow(
        "SELECT payload, doc_version FROM khala.documents d JOIN khala.state s ON s.live_generation = d.generation"
        " WHERE doc_key = $1",
        key,
    )
    return None if row is None else {**orjson.loads(row["payload"]), "_version": row["doc_version"]}


async def hashes(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT doc_key, payload_hash FROM khala.documents d JOIN khala.state s ON s.live_generation = d.generation"
    )
    return {r["doc_key"]: r["payload_hash"] for r in rows}


async def test_run_summary_and_notification(
    client: httpx.AsyncClient, run_id: str, writer_conn: asyncpg.Connection, sign: Signer
) -> None:
    url = f"/internal/v1/runs/{run_id}/events"
    started = {"event_type": "run.started", "payload": {"model": "m1", "org_id": "acme"}}
    r = await client.post(url, json=started, headers=sign("user:alice", org="acme"))
    assert r.status_code == 201, r.text
    await client.post(url, json={"event_type": "text.delta", "payload": {"text": "hello"}})
    await client.post(
        url, json={"event_type": "tool.call", "payload": {"tool_call_id": "t1", "tool": "grep"}}
    )
    await client.post(url, json={"event_type": "run.finished", "payload": {"status": "succeeded"}})
    await catch_up(writer_conn)
    summary = await doc(writer_conn, f"runtime/run_summary:{run_id}")
    assert summary is not None
    assert summary["status"] == "succeeded" and summary["_version"] == 4
    assert summary["owner"] == "alice" and summary["org_id"] == "acme"
    assert summary["text_chars"] == 5 and summary["tool_calls"] == 1
    note = await doc(writer_conn, f"runtime/notification:{run_id}")
    assert note is not None and note["latest"] == "run_succeeded"
    row = await writer_conn.fetchrow(
        "SELECT count(DISTINCT batch_id) AS batches FROM khala.stream_journal WHERE doc_key = ANY($1::text[])",
        [f"runtime/run_summary:{run_id}", f"runtime/notification:{run_id}"],
    )
    assert row is not None and row["batches"] >= 1


async def test_reader_role_cannot_write(reader_conn: asyncpg.Connection) -> None:
    for stmt in (
        "INSERT INTO khala.topic_heads (topic) VALUES ('x')",
        "UPDATE khala.state SET live_generation = 99",
        "DELETE FROM khala.stream_journal",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader_conn.execute(stmt)
    assert await reader_conn.fetchval("SELECT live_generation FROM khala.state") != 99


async def test_failing_projection_stops_loudly_others_go_on(
    client: httpx.AsyncClient, run_id: str, writer_conn: asyncpg.Connection
) -> None:
    await catch_up(writer_conn)

    def explode(doc: dict[str, object] | None, ev: Event, payload: dict[str, object]) -> dict[str, object]:
        if payload.get("text") == "boom":
            raise ValueError("cannot fold boom")
        return {"owner": "alice", "n": 1}

    name = f"exploding_{run_id}"
    bad = Projection(
        ProjectionDecl(name, "runtime.notifications", "runtime/notification:x-", 1, ("owner", "n"), ""),
        lambda ev: [ev.stream_id] if ev.kind == "run" else [],
        explode,
    )
    projections = (*PROJECTIONS, bad)
    await client.post(
        f"/internal/v1/runs/{run_id}/events", json={"event_type": "text.delta", "payload": {"text": "boom"}}
    )
    await client.post(
        f"/internal/v1/runs/{run_id}/events", json={"event_type": "text.delta", "payload": {"text": "after"}}
    )
    await catch_up(writer_conn, projections=projections)
    row = await writer_conn.fetchrow(
        "SELECT c.failed_at_position, c.error FROM khala.checkpoints c JOIN khala.state s ON s.live_generation = c.generation"
        " WHERE projection = $1",
        name,
    )
    assert row is not None and row["failed_at_position"] is not None
    assert "cannot fold boom" in row["error"] and run_id in row["error"]
    summary = await doc(writer_conn, f"runtime/run_summary:{run_id}")
    assert summary is not None and summary["text_chars"] == len("boom") + len("after")
    assert await writer_conn.fetchval("SELECT count(*) FROM khala.errors WHERE projection = $1", name) == 1
    # Leave Khala as the real projections would have it: the test projection's documents go.
    await writer_conn.execute("DELETE FROM khala.checkpoints WHERE projection = $1", name)
    await writer_conn.execute("DELETE FROM khala.documents WHERE doc_key LIKE 'runtime/notification:x-%'")


async def test_drop_and_rebuild_is_byte_identical(
    client: httpx.AsyncClient, writer_conn: asyncpg.Connection
) -> None:
    """Invariant 2: documents built incrementally (many small projector transactions)
    equal, byte for byte, those of a drop-everything-and-rebuild in large batches."""
    for i in range(5):
        url = f"/internal/v1/runs/rebuild-{i}/events/batch"
        events = [{"event_type": "run.started", "payload": {"model": f"m{i}"}}]
        events += [{"event_type": "text.delta", "payload": {"text": "x" * j}} for j in range(20)]
        events += [{"event_type": "run.finished", "payload": {"status": "failed" if i % 2 else "succeeded"}}]
        assert (await client.post(url, json={"events": events})).status_code in (200, 201)
    # Start from nothing, so documents other tests planted by hand do not count.
    await reset(writer_conn)
    await catch_up(writer_conn, batch_size=7)
    before = await hashes(writer_conn)
    assert len(before) >= 10
    await reset(writer_conn)
    assert await hashes(writer_conn) == {}
    await catch_up(writer_conn, batch_size=5000)
    assert await hashes(writer_conn) == before


async def test_audit_finds_drift_and_rebuild_repairs_it(
    client: httpx.AsyncClient, run_id: str, writer_conn: asyncpg.Connection, db: object
) -> None:
    await client.post(f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {}})
    await catch_up(writer_conn)
    clean = await audit(writer_conn)
    assert clean.drift == [] and clean.documents > 0
    key = f"runtime/run_summary:{run_id}"
    await writer_conn.execute(
        "UPDATE khala.documents SET payload_hash = 'tampered' WHERE doc_key = $1"
        " AND generation = (SELECT live_generation FROM khala.state)",
        key,
    )
    assert key in (await audit(writer_conn)).drift
    wm_before = await writer_conn.fetchval(
        "SELECT watermark FROM khala.topic_heads WHERE topic = 'runtime.run_summaries'"
    )
    report = await rebuild(writer_conn)
    assert key in report.drift
    assert (await audit(writer_conn)).drift == []
    # The repaired document was journaled, so connected clients converge too.
    wm_after = await writer_conn.fetchval(
        "SELECT watermark FROM khala.topic_heads WHERE topic = 'runtime.run_summaries'"
    )
    assert wm_after > wm_before


async def test_audit_leaves_out_a_projection_stored_at_another_version(
    client: httpx.AsyncClient, run_id: str, writer_conn: asyncpg.Connection
) -> None:
    """While a re-versioned projection rebuilds, its live documents are the old version's:
    not drift. Here the timeline's stored version is made to differ, and a tampered
    timeline document must not be reported; a tampered summary still is."""
    await client.post(f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {}})
    await catch_up(writer_conn)
    live = "(SELECT live_generation FROM khala.state)"
    tamper = (
        f"UPDATE khala.documents SET payload_hash = 'tampered' WHERE doc_key = $1 AND generation = {live}"
    )
    await writer_conn.execute(tamper, f"runtime/run_timeline:{run_id}")
    await writer_conn.execute(tamper, f"runtime/run_summary:{run_id}")
    set_version = f"UPDATE khala.checkpoints SET version = $1 WHERE projection = 'run_timelines' AND generation = {live}"
    await writer_conn.execute(set_version, 99)
    try:
        drift = (await audit(writer_conn)).drift
        assert f"runtime/run_summary:{run_id}" in drift and f"runtime/run_timeline:{run_id}" not in drift
    finally:
        await writer_conn.execute(set_version, 1)
        await rebuild(writer_conn)
    assert (await audit(writer_conn)).drift == []


async def test_worker_summary_follows_the_runtime_state_machine(
    client: httpx.AsyncClient, writer_conn: asyncpg.Connection
) -> None:
    wid = f"wkr-proj-{id(writer_conn)}"
    r = await client.post(
        "/internal/v1/codex/workers", json={"worker_id": wid, "workspace_ref": "ws-9", "adapter": "codex"}
    )
    assert r.status_code == 201, r.text
    await client.post(
        f"/internal/v1/codex/workers/{wid}/events", json={"event_type": "worker.heartbeat", "payload": {}}
    )
    await client.post(f"/internal/v1/codex/workers/{wid}/stop", json={})
    await catch_up(writer_conn)
    summary = await doc(writer_conn, f"runtime/codex_worker_summary:{wid}")
    snap = (await client.get(f"/internal/v1/codex/workers/{wid}/snapshot")).json()
    assert summary is not None
    assert summary["status"] == snap["status"] == "stopped"
    assert summary["workspace_ref"] == "ws-9" and summary["last_heartbeat_at"] is not None
    events = await writer_conn.fetchval(
        "SELECT count(*) FROM khala.documents WHERE doc_key LIKE $1", f"runtime/codex_worker_event:{wid}:%"
    )
    event_count = summary["event_count"]
    assert isinstance(event_count, int)
    assert events == event_count >= 3
