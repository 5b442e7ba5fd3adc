"""A new or re-versioned projection catches up in its own generation while live topics
stay live, and switches in with parity (issue 12.3).

Real parts: the runtime over HTTP, the projector, the sync server on a real socket and
the Python client. The journal holds tens of thousands of events (bench/projection_catchup.py
runs the 200,000-event case and measures commit -> client latency before and during).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx
import pytest

from oa.khala.client import KhalaClient
from oa.runtime.projector.projections import PROJECTIONS
from oa.runtime.projector.projector import Projector, lag
from oa.store.database import with_user
from tests.khala.build_fixtures import DIGEST_PREFIX, append_runs, digest, forget, fresh_fold, stored
from tests.khala.sync_fixtures import running_khala, token_provider

RUNS = "runtime.run_summaries"
EVENTS = 20_000  # what fits a test; the bench does 200,000


def holds(kc: KhalaClient, key: str, seq: int) -> bool:
    return key in kc.documents and kc.documents[key].doc_version >= seq


def digests(kc: KhalaClient) -> list[dict[str, object]]:
    return [d.payload for k, d in kc.documents.items() if k.startswith(DIGEST_PREFIX) and d.payload]


def only_version(kc: KhalaClient, version: int) -> bool:
    held = digests(kc)
    return bool(held) and all(d["v"] == version for d in held)


async def caught_up(conn: asyncpg.Connection, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while any(r["events_behind"] for r in (await lag(conn)).values()):
        assert time.monotonic() < deadline, "the projector did not catch up"
        await asyncio.sleep(0.1)


async def live_updates_during_build(
    client: httpx.AsyncClient, kc: KhalaClient, projector: Projector, run: str
) -> int:
    """Post to a live run until the build switches in; each update must reach the client."""
    arrived = 0
    while not projector.switched:
        resp = await client.post(
            f"/internal/v1/runs/{run}/events", json={"event_type": "text.delta", "payload": {"text": "y"}}
        )
        assert resp.status_code in (200, 201, 202), resp.text
        seq = resp.json()["last_seq"]
        key = f"runtime/run_summary:{run}"
        await kc.wait_until(lambda c: holds(c, key, seq), 10)  # noqa: B023 (awaited right here)
        # Never both versions at once: the old version's documents stay as they were until
        # the switch batch replaces them all (batches are applied whole).
        assert len({d["v"] for d in digests(kc)}) <= 1, "the client holds two projection versions"
        if not projector.switched:
            arrived += 1
    return arrived


@pytest.mark.timeout(300)
async def test_new_then_reversioned_projection_builds_beside_live_topics(
    database_url: str, client: httpx.AsyncClient, writer_conn: asyncpg.Connection
) -> None:
    tag = uuid.uuid4().hex[:6]
    live_run = f"live-{tag}"
    v1, v2 = digest(1), digest(2)
    try:
        async with running_khala(database_url) as khala:
            await append_runs(client, f"bulk-{tag}", EVENTS // 100, 100)
            await client.post(
                f"/internal/v1/runs/{live_run}/events", json={"event_type": "run.started", "payload": {}}
            )
            async with KhalaClient(khala.url, token_provider("alice"), [RUNS]) as kc:
                key = f"runtime/run_summary:{live_run}"
                await kc.wait_until(lambda c: key in c.documents, timeout=60)
                await caught_up(writer_conn)
                await khala.projector.stop()

                # Deploy a projection: the projector restarts with it declared.
                for version, p in ((1, v1), (2, v2)):
                    projector = Projector(
                        with_user(database_url, "oa_khala_writer"),
                        idle_poll_s=0.2,
                        build_batch_size=200,
                        projections=(*PROJECTIONS, p),
                    )
                    projector.start()
                    try:
                        arrived = await live_updates_during_build(client, kc, projector, live_run)
                        # Live updates kept arriving while the build caught up.
                        assert arrived >= 3, (
                            f"only {arrived} live updates arrived during the v{version} build"
                        )
                        report = projector.switched[0]
                        assert report.projection == p.name and report.version == version  # type: ignore[attr-defined]
                        # Parity: its documents equal a fresh fold of the whole journal.
                        expected = await fresh_fold(writer_conn, p)
                        assert expected and await stored(writer_conn, DIGEST_PREFIX) == expected
                        state = (await lag(writer_conn, (*PROJECTIONS, p)))[p.name]
                        assert state["state"] == "live" and state["stored_version"] == version
                        # The client ends up holding only documents of this version.
                        try:
                            await kc.wait_until(lambda c: only_version(c, version), 30)  # noqa: B023
                        except TimeoutError:
                            held = digests(kc)
                            raise AssertionError(
                                f"v{version}: client holds {len(held)} digests, versions {sorted({str(d['v']) for d in held})}, report {report}"
                            ) from None
                    finally:
                        await projector.stop()
    finally:
        await forget(writer_conn, v1)


async def test_khala_status_shows_version_state_and_lag(database_url: str, tmp_path: object) -> None:
    from typer.testing import CliRunner

    from oa.cli.main import app as cli

    env = {"OA_DATABASE_URL": database_url, "OA_HOME": str(tmp_path), "COLUMNS": "200"}
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["khala", "status"], env=env)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    for p in PROJECTIONS:
        assert p.name in rows, result.output
        assert f"v{p.version}" in rows[p.name] and ("live" in rows[p.name] or "new" in rows[p.name])
