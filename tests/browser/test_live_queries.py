"""khala.js live queries in Chromium against the real system (control, runtime, projector,
`oa khala serve`): each scope kind's view equals the same query on the store after appends,
a list's enter and leave, the run page receives its own run only, the runs page shows the
newest 50 of the signed-in user, a per-subscription stale cursor, streamed text, and a
failover between two Khala nodes over one database with nothing missed or applied twice.
Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from oa.khala.store import live as store
from oa.khala.topics import TOPICS
from tests.browser.conftest import KhalaChild, Stack
from tests.browser.test_dashboard import append, new_run, signed_in
from tests.conftest import Signer

TOPIC = "runtime.run_summaries"
RUN = "runtime/run_summary:"
TIMELINE = "runtime/run_timeline:"

# Watch from the test, logging every change the view applies: [op, doc_key, doc_version].
WATCH = """([sub, topic, scope]) => {
  const v = window.oa.client.watch(sub, topic, scope);
  window.__changes = window.__changes || {};
  const log = (window.__changes[sub] = []);
  v.onChange((c) => log.push([c.op, c.doc_key, c.doc_version]));
}"""
# Each entry with the hash of the payload the page holds, computed in the page: equal to the
# store's payload_hash, the page holds the same document (deltas included), not just its version.
VIEW = """async (sub) => {
  const { payloadHash } = await import("/client/khala.js");
  const v = window.oa.client.views.get(sub);
  if (!v) return null;
  const entries = [];
  for (const d of v.entries()) entries.push([d.doc_key, d.doc_version, await payloadHash(d.payload)]);
  return { live: v.live, entries };
}"""


@pytest.fixture(scope="module")
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    assert p is not None
    yield p
    await p.close()


async def on_store(pool: asyncpg.Pool, user_id: str, topic: str, scope: dict[str, Any]) -> list[list[Any]]:
    """The same query evaluated on the store: [doc_key, doc_version, payload_hash] in the
    view's order."""
    t = TOPICS[topic]
    if "doc_key" in scope or "stream" in scope:
        loaded = await store.scope_documents(
            pool, topic, doc_key=scope.get("doc_key"), stream=scope.get("stream"),
            user_id=user_id, org_id=None, limit=t.replay_budget,
        )  # fmt: skip
        return sorted(
            [r.doc_key, r.doc_version, r.payload_hash] for r in loaded.rows if r.payload is not None
        )
    loaded = await store.list_documents(
        pool, topic, doc_prefix=t.doc_prefix, where=scope.get("where", {}),
        order_by=scope.get("order_by") or t.orderable[0], ascending=bool(scope.get("ascending")),
        limit=scope.get("limit", 50), user_id=user_id, org_id=None,
    )  # fmt: skip
    return [[r.doc_key, r.doc_version, r.payload_hash] for r in loaded.rows]


async def converge(
    page: Any,
    pool: asyncpg.Pool,
    stack: Stack,
    sub: str,
    topic: str,
    scope: dict[str, Any],
    keys: list[str] | None = None,
    timeout: float = 15,
) -> list[list[Any]]:
    """Wait until the page's view equals the store's answer (and, given `keys`, the store
    holds those keys in that order: the projector may not have committed the appends yet)."""
    deadline = time.monotonic() + timeout
    while True:
        view = await page.evaluate(VIEW, sub)
        want = await on_store(pool, stack.user_id, topic, scope)
        got: list[list[Any]] | None = view["entries"] if view else None
        if got is not None and view["live"] and (keys is None or [w[0] for w in want] == keys):
            got = got if "where" in scope or "limit" in scope else sorted(got)
            if got == want:
                return want
        if time.monotonic() > deadline:
            raise AssertionError(f"{sub}: the view {got} never equalled the store {want}")
        await asyncio.sleep(0.1)


def applied_twice(changes: list[list[Any]]) -> list[list[Any]]:
    """Upserts of a (key, version) the view already held: with no remove between, that is a
    change applied twice (a list may drop a document and take the same version back)."""
    held: dict[str, int] = {}
    twice = []
    for op, key, version in changes:
        if op == "remove":
            held.pop(key, None)
        elif key in held and held[key] >= version:
            twice.append([op, key, version])
        else:
            held[key] = version
    return twice


async def test_views_equal_the_store_and_a_list_enters_and_leaves(
    context: Any, stack: Stack, sign: Signer, pool: asyncpg.Pool
) -> None:
    page = await signed_in(context, stack)
    r1, r2, r3 = new_run(), new_run(), new_run()
    for r in (r1, r2, r3):
        await append(stack, sign, r, "run.started", {})
    doc = {"doc_key": RUN + r1}
    stream = {"stream": r2}
    running = {
        "where": {"owner": stack.user_id, "status": "running"},
        "order_by": "last_event_at",
        "limit": 2,
    }
    for sub, scope in (("doc", doc), ("stream", stream), ("running", running)):
        await page.evaluate(WATCH, [sub, TOPIC, scope])
    await converge(page, pool, stack, "running", TOPIC, running, [RUN + r3, RUN + r2])
    await converge(page, pool, stack, "doc", TOPIC, doc)
    await converge(page, pool, stack, "stream", TOPIC, stream)

    # r1 moves to the top of "running": it enters, r2 drops out of the top 2.
    await append(stack, sign, r1, "tool.call", {"tool_call_id": "t1", "tool": "grep"})
    await converge(page, pool, stack, "running", TOPIC, running, [RUN + r1, RUN + r3])
    changes = await page.evaluate("window.__changes.running")
    assert ["remove", RUN + r2] in [c[:2] for c in changes]
    assert changes[-2:] == [["upsert", RUN + r1, 2], ["remove", RUN + r2, 1]] or changes[-2:] == [
        ["remove", RUN + r2, 1],
        ["upsert", RUN + r1, 2],
    ]
    # r1 finishes: it leaves the filter, and r2 comes back into the top 2.
    await append(stack, sign, r1, "run.finished", {"status": "succeeded"})
    await append(stack, sign, r2, "text.delta", {"text": "hello"})
    await converge(page, pool, stack, "running", TOPIC, running, [RUN + r2, RUN + r3])
    changes = await page.evaluate("window.__changes.running")
    assert ["remove", RUN + r1] in [c[:2] for c in changes[-3:]]
    assert [w[:2] for w in await converge(page, pool, stack, "doc", TOPIC, doc)] == [[RUN + r1, 3]]
    streamed = await converge(page, pool, stack, "stream", TOPIC, stream)
    assert [RUN + r2, 2] in [w[:2] for w in streamed] and [TIMELINE + r2, 2] in [w[:2] for w in streamed]
    for sub in ("doc", "stream", "running"):
        assert applied_twice(await page.evaluate(f"window.__changes[{sub!r}]")) == []
    assert page.errors == []


async def test_run_page_receives_only_its_own_run(
    context: Any, stack: Stack, sign: Signer, artifacts: Path
) -> None:
    mine, other = new_run(), new_run()
    await append(stack, sign, mine, "run.started", {"model": "gpt-test"})
    await append(stack, sign, other, "run.started", {})
    await context.add_init_script(
        "window.__frames = []; const W = window.WebSocket; window.WebSocket = class extends W {"
        " constructor(...a) { super(...a); this.addEventListener('message', (e) => window.__frames.push(e.data)); } };"
    )
    page = await signed_in(context, stack, f"#/runs/{mine}")
    await page.wait_for_selector("#run-events tr[data-seq='1']", timeout=10000)
    # The same user's other run changes meanwhile; then this run, last.
    for i in range(5):
        await append(stack, sign, other, "text.delta", {"text": f"other {i}"})
    await append(stack, sign, mine, "tool.call", {"tool_call_id": "t1", "tool": "grep"})
    await append(stack, sign, mine, "run.finished", {"status": "succeeded"})
    await page.wait_for_selector("#run-events tr[data-seq='3']", timeout=10000)
    await asyncio.sleep(0.5)  # anything about the other run would have come by now
    frames: list[str] = await page.evaluate("window.__frames")
    assert any(mine in f for f in frames)
    about_other = [f for f in frames if other in f]
    assert about_other == [], f"the run page received {len(about_other)} frames about another run"
    held = await page.evaluate(
        "() => ({cache: window.oa.client.documents.size, views: [...window.oa.client.views.values()]"
        ".map((v) => [v.scope, [...v.documents.keys()]])})"
    )
    assert held["cache"] == 0  # no whole-topic subscription
    assert held["views"] == [[{"stream": mine}, sorted(held["views"][0][1])]]
    assert all(k.endswith(":" + mine) for k in held["views"][0][1])
    assert "succeeded" in await page.locator("#run-status").inner_text()
    assert page.errors == []


async def test_runs_page_shows_the_newest_50_of_the_user(
    context: Any, stack: Stack, sign: Signer, pool: asyncpg.Pool, artifacts: Path
) -> None:
    ours = [new_run() for _ in range(52)]
    for r in ours:
        await append(stack, sign, r, "run.started", {"model": "gpt-test"})
    theirs = f"theirs-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(
        base_url=stack.runtime_url, headers=sign(f"user:other-{uuid.uuid4().hex[:6]}")
    ) as h:
        assert (
            await h.post(
                f"/internal/v1/runs/{theirs}/events", json={"event_type": "run.started", "payload": {}}
            )
        ).status_code == 201
    page = await signed_in(context, stack)
    scope = {"where": {"owner": stack.user_id}, "order_by": "last_event_at", "limit": 50}

    async def shown_equals_store(top: str) -> list[str]:
        deadline = time.monotonic() + 10
        while True:  # the projector commits the newest run first
            want = [w[0].split(":", 1)[1] for w in await on_store(pool, stack.user_id, TOPIC, scope)]
            if want[0] == top or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert len(want) == 50 and want[0] == top
        await page.wait_for_function(
            "(want) => JSON.stringify([...document.querySelectorAll('#runs-body tr[data-run]')]"
            ".map((tr) => tr.dataset.run)) === JSON.stringify(want)",
            arg=want,
            timeout=15000,
        )
        return want

    shown = await shown_equals_store(ours[-1])
    assert theirs not in shown
    assert "50 runs (the newest 50)" in await page.locator("#runs-count").inner_text()
    # An old run of ours wakes up: it enters at the top, the 50th leaves.
    await append(stack, sign, ours[0], "tool.call", {"tool_call_id": "t1", "tool": "grep"})
    shown2 = await shown_equals_store(ours[0])
    assert shown[-1] not in shown2
    await page.screenshot(path=str(artifacts / "runs-newest-50.png"), full_page=False)
    # The status filter is part of the query: the newest 50 of that status.
    await page.select_option("select[aria-label='Filter runs by status']", "succeeded")
    await page.wait_for_function(
        "[...document.querySelectorAll('#runs-body tr[data-run]')].every((tr) => tr.dataset.status === 'succeeded')",
        timeout=10000,
    )
    assert page.errors == []


async def test_run_page_stale_cursor_retakes_the_current_documents(
    context: Any, stack: Stack, sign: Signer, pool: asyncpg.Pool
) -> None:
    run = new_run()
    await append(stack, sign, run, "run.started", {})
    page = await signed_in(context, stack, f"#/runs/{run}")
    await page.wait_for_selector("#run-events tr[data-seq='1']", timeout=10000)
    sub = await page.evaluate("[...window.oa.client.views.keys()][0]")
    # A cursor past the head is what a rebuilt history looks like: that query gets stale_cursor.
    await page.evaluate(
        "(sub) => { const c = window.oa.client; c.views.get(sub).watermark = 10 ** 12; c.reconnect(); }", sub
    )
    await page.wait_for_function(
        "(sub) => window.oa.client.stats.errors.some((e) => e.code === 'stale_cursor' && e.sub === sub)",
        arg=sub,
        timeout=10000,
    )
    await append(stack, sign, run, "run.finished", {"status": "failed"})
    await page.wait_for_selector("#run-events tr[data-seq='2']", timeout=10000)
    await converge(page, pool, stack, sub, TOPIC, {"stream": run})
    assert await page.evaluate("window.oa.client.stats.hydrations") == 0


async def test_run_page_shows_streamed_text_growing(
    context: Any, stack: Stack, sign: Signer, artifacts: Path
) -> None:
    async with httpx.AsyncClient(base_url=stack.khala.url) as h:
        config = (await h.get("/dashboard/config.json")).json()
    if not any(p["doc_prefix"].startswith("runtime/run_text") for p in config["projections"].values()):
        pytest.skip(
            "this server has no streamed-text projection (runtime/run_text:) yet: the deltas branch adds it"
        )
    run = new_run()
    await append(stack, sign, run, "run.started", {"model": "gpt-test"})
    page = await signed_in(context, stack, f"#/runs/{run}")
    words = ["The", "agent", "reads", "the", "repository,", "finds", "the", "failing", "test:"]
    words += ["naïve", "café", "日本語", "🚀", "done."]
    text = ""
    for i, w in enumerate(words):
        delta = w if i == 0 else " " + w
        text += delta
        await append(stack, sign, run, "text.delta", {"text": delta})
        if i == 3:  # it grows while the run goes on
            await page.wait_for_function(
                "(t) => (document.querySelector('#run-text') || {}).textContent === t",
                arg=text,
                timeout=10000,
            )
    await page.wait_for_function(
        "(t) => (document.querySelector('#run-text') || {}).textContent === t", arg=text, timeout=10000
    )
    await page.screenshot(path=str(artifacts / "run-streamed-text.png"), full_page=True)
    before = await page.evaluate("({...window.oa.client.stats})")
    assert before["patched"] >= 1  # tokens came as deltas, checked by hash

    # Both fall-backs against the real server: the base it holds is not the patch's (a
    # missing base), then what it holds is not what the server hashed (a mismatch). Each
    # time the page fetches the whole document and still shows the right text.
    key = f"runtime/run_text:{run}"
    for forced, change in (
        ("missing base", "d.doc_version -= 1"),
        ("hash mismatch", "d.payload = {...d.payload, chunks: [...d.payload.chunks.slice(1)]}"),
    ):
        fetches = await page.evaluate("window.oa.client.stats.fetches")
        await page.evaluate(
            f"(k) => {{ const v = [...window.oa.client.views.values()][0]; const d = v.documents.get(k); {change}; }}",
            key,
        )
        text += f" {forced}"
        await append(stack, sign, run, "text.delta", {"text": f" {forced}"})
        await page.wait_for_function(
            "(t) => (document.querySelector('#run-text') || {}).textContent === t", arg=text, timeout=10000
        )
        after = await page.evaluate("({...window.oa.client.stats})")
        assert after["fetches"] == fetches + 1 and after["fetched"] >= 1, forced
    assert page.errors == []


@pytest.mark.slow  # a second Khala node, a kill -9 and a failover: about 20 s
async def test_failover_to_another_node_nothing_missed_or_twice(
    context: Any, stack: Stack, sign: Signer, pool: asyncpg.Pool, tmp_path: Path, artifacts: Path
) -> None:
    a = stack.khala
    b = KhalaChild(a.database_url, a.control_url, tmp_path, stack.spare_port, a.sync_urls)
    await asyncio.to_thread(b.start)
    try:
        runs = [new_run() for _ in range(4)]
        for r in runs[:2]:
            await append(stack, sign, r, "run.started", {})
        page = await signed_in(context, stack)
        await page.evaluate("window.__noReload = 1")
        assert await page.evaluate("window.oa.client.baseUrl") == a.url
        scopes: dict[str, dict[str, Any]] = {
            "list": {"where": {"owner": stack.user_id}, "order_by": "last_event_at", "limit": 5},
            "stream": {"stream": runs[0]},
            "doc": {"doc_key": RUN + runs[1]},
        }
        for sub, scope in scopes.items():
            await page.evaluate(WATCH, [sub, TOPIC, scope])
        for sub, scope in scopes.items():
            await converge(page, pool, stack, sub, TOPIC, scope)

        await asyncio.to_thread(a.kill9)
        # The runtime goes on while the page moves to the other node.
        for i in range(3):
            await append(stack, sign, runs[0], "text.delta", {"text": f"t{i}"})
        await append(stack, sign, runs[1], "run.finished", {"status": "succeeded"})
        for r in runs[2:]:
            await append(stack, sign, r, "run.started", {})
        await page.wait_for_function(
            "(b) => window.oa.client.baseUrl === b && window.oa.client.state === 'live'",
            arg=b.url,
            timeout=20000,
        )
        for r in runs[2:]:
            await page.locator(f"tr[data-run='{r}']").wait_for(timeout=10000)
        await append(stack, sign, runs[0], "run.finished", {"status": "failed"})
        for sub, scope in scopes.items():
            await converge(page, pool, stack, sub, TOPIC, scope)
            twice = applied_twice(await page.evaluate(f"window.__changes[{sub!r}]"))
            assert twice == [], f"{sub} applied twice: {twice}"
        stats = await page.evaluate("window.oa.client.stats")
        assert stats["failovers"] >= 1 and stats["hydrations"] == 0
        assert await page.evaluate("window.__noReload") == 1
        await page.screenshot(path=str(artifacts / "runs-after-failover.png"), full_page=False)
    finally:
        b.stop()
        if a.proc is None or a.proc.poll() is not None:
            await asyncio.to_thread(a.start)


async def test_workers_page_shows_the_users_workers_newest_first(
    context: Any, stack: Stack, sign: Signer, pool: asyncpg.Pool, artifacts: Path
) -> None:
    """The workers page's live query: this user's workers only, newest event first."""
    ours = [f"w-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    theirs = f"w-theirs-{uuid.uuid4().hex[:6]}"
    for principal, wid in [(f"user:{stack.user_id}", w) for w in ours] + [(f"user:other-{theirs}", theirs)]:
        async with httpx.AsyncClient(base_url=stack.runtime_url, headers=sign(principal)) as h:
            r = await h.post("/internal/v1/codex/workers", json={"worker_id": wid, "adapter": "codex"})
            assert r.status_code in (200, 201), r.text
    page = await signed_in(context, stack, "#/workers")
    scope = {"where": {"owner": stack.user_id}, "order_by": "last_event_at", "limit": 50}
    topic = "runtime.codex_worker_summaries"

    async def shown_equals_store(top: str) -> list[str]:
        deadline = time.monotonic() + 10
        while True:
            want = [w[0].split(":", 1)[1] for w in await on_store(pool, stack.user_id, topic, scope)]
            if (want and want[0] == top) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        await page.wait_for_function(
            "(want) => JSON.stringify([...document.querySelectorAll('#workers-body tr[data-worker]')]"
            ".map((tr) => tr.dataset.worker)) === JSON.stringify(want)",
            arg=want,
            timeout=10000,
        )
        return want

    shown = await shown_equals_store(ours[-1])
    assert set(ours) <= set(shown) and theirs not in shown
    # A heartbeat moves the oldest of ours to the top.
    async with httpx.AsyncClient(base_url=stack.runtime_url, headers=sign(f"user:{stack.user_id}")) as h:
        r = await h.post(
            f"/internal/v1/codex/workers/{ours[0]}/events",
            json={"event_type": "worker.heartbeat", "payload": {}},
        )
        assert r.status_code in (200, 201), r.text
    await shown_equals_store(ours[0])
    await page.screenshot(path=str(artifacts / "workers-live-query.png"), full_page=False)
    assert page.errors == []
