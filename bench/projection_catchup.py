"""Adding a projection to a full journal: live commit -> client latency before, during and
after its background catch-up (issue 12.3), and the catch-up rate.

    .venv/bin/python bench/projection_catchup.py [--events 200000] [--build-batch 500]

One process, one event loop (the runtime's HTTP app, the projector, the sync server and
the client share it, as in tests; the figures are an upper bound on what separate
processes would show), one embedded Postgres (or `OA_BENCH_DATABASE_URL`).

1. `--events` events go in through the batch API (runs of 100 events); the projector,
   with the declared projections, catches up; a client subscribes to run summaries.
2. "before": one event every 100 ms on a live run; latency = the time the client holds
   the run summary at that event's seq, minus the event's `recorded_at` (Postgres `now()`
   in the appending transaction, same clock): commit -> client.
3. The projector restarts with one more projection (the tests' run digest): it builds in
   its own generation, `--build-batch` events per step between live batches. "during":
   the same probe until the build switches in. "after": 3 s more.

Measured 2026-12-03 on the shared 2-core machine (load average 4.5 from other work), the
default 200,000 events: commit -> client p50/p90/p99 22/61/184 ms before, 26/94/244 ms
during the catch-up, 16/32/73 ms after; the build folded 200,100 events in 5.8 s
(34,600 events/s) beside the live projections. Before issue 12.3 a new projection held
every live topic until it had folded the whole journal (here about 13 s at 15,300
events/s for all six). The build step of 500 events is what a live update may wait
behind: the p99 during a build rose by about one step's fold and commit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import benchlib  # noqa: E402

from oa.khala.client import KhalaClient  # noqa: E402
from oa.khala.sync.app import create_sync_app  # noqa: E402
from oa.khala.sync.tokens import verify_with  # noqa: E402
from oa.runtime.projector.projections import PROJECTIONS  # noqa: E402
from oa.runtime.projector.projector import Projector, lag  # noqa: E402
from oa.runtime.service.container import build_runtime_app  # noqa: E402
from oa.runtime.settings import RuntimeSettings  # noqa: E402
from oa.runtime.signing import HEADER, sign_caller  # noqa: E402
from oa.store import migrate  # noqa: E402
from oa.store.database import with_user  # noqa: E402
from tests.khala.build_fixtures import append_runs, digest  # noqa: E402
from tests.khala.sync_fixtures import token_provider, verifier  # noqa: E402
from tests.support.servers import serve_in_loop  # noqa: E402

SECRET = b"bench-caller-secret-0123456789abcdef"
RUNS = "runtime.run_summaries"
console = Console()


async def probe(
    client: httpx.AsyncClient, kc: KhalaClient, run: str, until: object, samples: list[float]
) -> None:
    """One event every 100 ms until `until()`; append each commit -> client latency (s)."""
    key = f"runtime/run_summary:{run}"
    while not until():  # type: ignore[operator]
        t0 = time.monotonic()
        r = await client.post(
            f"/internal/v1/runs/{run}/events", json={"event_type": "text.delta", "payload": {"text": "y"}}
        )
        body = r.json()
        seq, at = (
            body["last_seq"],
            datetime.fromisoformat(body["event"]["recorded_at"].replace("Z", "+00:00")),
        )
        await kc.wait_until(lambda c: key in c.documents and c.documents[key].doc_version >= seq, 30)  # noqa: B023
        samples.append(time.time() - at.timestamp())
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


async def run(url: str, events: int, build_batch: int) -> None:
    writer_url = with_user(url, "oa_khala_writer")
    runtime = build_runtime_app(url, RuntimeSettings(caller_secret=SECRET, max_body_bytes=1 << 20))
    sync = create_sync_app(with_user(url, "oa_khala_reader"), verify_with(verifier()))

    async def sign(request: httpx.Request) -> None:  # a fresh caller signature per request
        request.headers[HEADER] = sign_caller(SECRET, "user:alice", 300)

    async with serve_in_loop(runtime) as runtime_url, serve_in_loop(sync) as khala_url:  # noqa: SIM117
        async with httpx.AsyncClient(
            base_url=runtime_url, event_hooks={"request": [sign]}, timeout=60
        ) as client:
            t0 = time.monotonic()
            await append_runs(client, "bulk", events // 100, 100)
            append_s = time.monotonic() - t0
            live_run = "live-probe"
            await client.post(f"/internal/v1/runs/{live_run}/events", json={"event_type": "run.started"})
            first = Projector(writer_url, idle_poll_s=0.2)
            first.start()
            t0 = time.monotonic()
            conn = await asyncpg.connect(writer_url)
            while any(r["events_behind"] for r in (await lag(conn)).values()):
                await asyncio.sleep(0.2)
            initial_s = time.monotonic() - t0
            async with KhalaClient(khala_url, token_provider("alice"), [RUNS]) as kc:
                await kc.wait_until(lambda c: f"runtime/run_summary:{live_run}" in c.documents, 60)
                before: list[float] = []
                stop_at = time.monotonic() + 5
                await probe(client, kc, live_run, lambda: time.monotonic() > stop_at, before)
                await first.stop()
                p = digest(1)
                second = Projector(
                    writer_url, idle_poll_s=0.2, build_batch_size=build_batch, projections=(*PROJECTIONS, p)
                )
                during: list[float] = []
                t0 = time.monotonic()
                second.start()
                await probe(client, kc, live_run, lambda: bool(second.switched), during)
                build_s = time.monotonic() - t0
                after: list[float] = []
                stop_at = time.monotonic() + 3
                await probe(client, kc, live_run, lambda: time.monotonic() > stop_at, after)
                await second.stop()
            await conn.close()

    t = Table(
        title=f"commit -> client latency, {events:,} events in the journal, build step {build_batch} events"
    )
    for col in ("phase", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        t.add_column(col, justify="right" if col != "phase" else "left")
    for name, xs in (("before (live only)", before), ("during catch-up", during), ("after switch", after)):
        s = sorted(xs)
        row = [benchlib.percentile(s, q) * 1000 for q in (50, 90, 99)] if s else [0.0, 0.0, 0.0]
        t.add_row(name, str(len(s)), *(f"{v:.1f}" for v in row), f"{(s[-1] if s else 0) * 1000:.1f}")
    console.print(t)
    t2 = Table(title="throughput")
    t2.add_column("step")
    t2.add_column("events", justify="right")
    t2.add_column("seconds", justify="right")
    t2.add_column("events/s", justify="right")
    total = events + len(before) + len(during) + 1
    for name, n, s in (
        ("append (batch API)", events, append_s),
        (f"initial projection ({len(PROJECTIONS)} live projections)", events, initial_s),
        ("background build of 1 new projection", total, build_s),
    ):
        t2.add_row(name, f"{n:,}", f"{s:.1f}", f"{n / s:,.0f}" if s else "-")
    console.print(t2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--build-batch", type=int, default=500)
    args = ap.parse_args()
    with benchlib.postgres() as pg, benchlib.database(pg.admin_url, "oa_bench_catchup") as url:
        migrate(url)
        asyncio.run(run(url, args.events, args.build_batch))


if __name__ == "__main__":
    main()
