"""The dashboard in Debian's Chromium against the real system: sign in through control, see
runs change live as the runtime appends events, survive a kill -9 of the Khala server,
refresh tokens and resync without a reload. Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from oa.khala.store.live import list_documents
from tests.browser.conftest import ADMIN_KEY, PASSWORD, Stack
from tests.conftest import Signer


async def append(stack: Stack, sign: Signer, run_id: str, event_type: str, payload: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=stack.runtime_url, headers=sign(f"user:{stack.user_id}")) as h:
        r = await h.post(
            f"/internal/v1/runs/{run_id}/events", json={"event_type": event_type, "payload": payload}
        )
        assert r.status_code == 201, r.text


async def signed_in(context: Any, stack: Stack, query: str = "") -> Any:
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    await page.goto(f"{stack.khala.url}/dashboard/{query}")
    await page.fill("input[name=email]", stack.email)
    await page.fill("input[name=password]", PASSWORD)
    await page.press("input[name=password]", "Enter")
    await page.wait_for_selector("#conn[data-state=live]", timeout=15000)
    return page


async def stats(page: Any) -> dict[str, Any]:
    return dict(
        await page.evaluate(
            "() => ({...window.oa.client.stats, state: window.oa.client.state,"
            " expiresAt: window.oa.client.expiresAt, errors: window.oa.client.stats.errors.length})"
        )
    )


def new_run() -> str:
    return f"dash-{uuid.uuid4().hex[:10]}"


async def test_sign_in_and_runs_update_live(
    context: Any, stack: Stack, sign: Signer, artifacts: Path
) -> None:
    page = await signed_in(context, stack)
    assert page.url.endswith("#/runs")
    run = new_run()
    await append(stack, sign, run, "run.started", {"model": "gpt-test"})
    row = page.locator(f"tr[data-run='{run}']")
    await row.locator(".status-running").wait_for(timeout=5000)
    await append(stack, sign, run, "tool.call", {"tool_call_id": "t1", "tool": "grep"})
    await append(stack, sign, run, "run.finished", {"status": "succeeded"})
    await row.locator(".status-succeeded").wait_for(timeout=5000)
    assert await row.get_attribute("data-seq") == "3"
    assert (await stats(page))["connects"] == 1  # one socket; no reload, no reconnect
    await page.screenshot(path=str(artifacts / "runs.png"), full_page=True)

    await row.locator("a").click()
    await page.wait_for_selector("#run-events tr[data-seq='3']", timeout=5000)
    types = await page.locator("#run-events tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert types == ["run.finished", "tool.call", "run.started"]
    assert "succeeded" in await page.locator("#run-status").inner_text()
    await page.screenshot(path=str(artifacts / "run.png"), full_page=True)

    # Phone-sized, keyboard only: the nav is reachable by Tab and routes on Enter.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{stack.khala.url}/dashboard/#/runs")
    await page.wait_for_selector("#conn[data-state=live]")
    await page.focus("nav a[data-page=workers]")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#workers")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    await page.screenshot(path=str(artifacts / "workers-phone.png"), full_page=True)
    assert page.errors == []


async def test_other_pages(context: Any, stack: Stack, sign: Signer, artifacts: Path) -> None:
    run = new_run()
    await append(stack, sign, run, "run.started", {})
    page = await signed_in(context, stack)
    await page.goto(f"{stack.khala.url}/dashboard/#/topics")
    await page.wait_for_selector("#topics-body tr[data-topic='runtime.run_summaries']")
    await page.screenshot(path=str(artifacts / "topics.png"), full_page=True)

    key = f"runtime/run_summary:{run}"
    await page.goto(f"{stack.khala.url}/dashboard/#/doc/runtime.run_summaries/{key}")
    await append(stack, sign, run, "run.finished", {"status": "failed"})
    # History comes from the stream journal: both versions, newest first.
    await page.wait_for_function(
        "document.querySelectorAll('#doc-history tr[data-watermark]').length >= 2", timeout=5000
    )
    # The current document comes over the live socket, the history over HTTP: either may land
    # first, so wait for the live view to show the new version too.
    await page.wait_for_function(
        "document.querySelector('#doc-current').innerText.includes('\"failed\"')", timeout=5000
    )
    assert '"failed"' in await page.locator("#doc-current").inner_text()
    await page.screenshot(path=str(artifacts / "document.png"), full_page=True)

    # A topic's page follows the whole topic (the other pages hold live queries only): the
    # health page below counts that subscription.
    follower = await signed_in(context, stack, "#/topics/runtime.run_summaries")
    await follower.wait_for_selector(f"#docs-body tr[data-doc='{key}']", timeout=10000)
    # Status and lag are for operators: the page sends the admin key the Operators page keeps.
    await page.evaluate(f"sessionStorage.setItem('oa.dashboard.admin_key', {ADMIN_KEY!r})")
    await page.goto(f"{stack.khala.url}/dashboard/#/health")
    await page.wait_for_selector("#projections-body tr[data-projection='run_summaries']")
    await page.wait_for_selector("#lag-chart path", state="attached", timeout=10000)
    subs = await page.locator("#subs-body tr[data-topic='runtime.run_summaries'] td").nth(2).inner_text()
    assert int(subs) >= 1  # the topic page's whole-topic subscription
    await page.screenshot(path=str(artifacts / "health.png"), full_page=True)
    await page.evaluate("sessionStorage.removeItem('oa.dashboard.admin_key')")

    await page.goto(f"{stack.khala.url}/dashboard/#/operators")
    note = page.locator("#operators-note")
    await note.wait_for()
    assert "admin key" in (await note.inner_text())
    await page.screenshot(path=str(artifacts / "operators.png"), full_page=True)
    assert page.errors == []


async def test_spend_page_sums_per_org_and_day(
    context: Any, stack: Stack, sign: Signer, artifacts: Path
) -> None:
    """The run_daily_spend projection (declared in proto, folded in the runtime) on a page
    that finds its documents by the prefix the served config names."""
    run, auth = new_run(), f"auth-{uuid.uuid4().hex[:10]}"
    await append(stack, sign, run, "run.started", {})
    page = await signed_in(context, stack)
    await page.goto(f"{stack.khala.url}/dashboard/#/spend")
    await page.wait_for_selector("#spend-body tr")
    async with httpx.AsyncClient(base_url=stack.runtime_url, headers=sign(f"user:{stack.user_id}")) as h:
        body = {"authorization_id": auth, "mode": "delegated_budget", "max_total_sats": 1000}
        assert (await h.post("/internal/v1/spend/authorizations", json=body)).status_code == 201
        for i, amount in enumerate((40, 2)):
            reserve = {
                "authorization_id": auth,
                "run_id": run,
                "tool_call_id": f"tc{i}",
                "amount_sats": amount,
            }
            r = await h.post("/internal/v1/spend/reservations", json=reserve)
            assert r.status_code == 201, r.text
    row = page.locator(f"#spend-body tr[data-org='{stack.user_id} (no org)']").first
    await row.wait_for(timeout=10000)
    await page.wait_for_function(
        "(org) => [...document.querySelectorAll('#spend-body tr')].some((tr) => tr.dataset.org === org"
        " && Number(tr.children[2].innerText) >= 42)",
        arg=f"{stack.user_id} (no org)",
        timeout=10000,
    )
    await page.screenshot(path=str(artifacts / "spend.png"), full_page=True)
    assert page.errors == []


@pytest.mark.slow  # two Khala process starts and a reconnect backoff: about 20 s
async def test_kill_and_restart_khala_nothing_missing(
    context: Any, stack: Stack, sign: Signer, artifacts: Path
) -> None:
    page = await signed_in(context, stack)
    await page.evaluate("window.__noReload = 1")
    runs = [new_run() for _ in range(6)]
    for r in runs[:3]:
        await append(stack, sign, r, "run.started", {})
    await page.locator(f"tr[data-run='{runs[2]}']").wait_for(timeout=5000)

    await asyncio.to_thread(stack.khala.kill9)
    await page.wait_for_selector("#conn[data-state=reconnecting]", timeout=10000)
    assert await page.locator("#banner").is_visible()
    await page.screenshot(path=str(artifacts / "reconnecting.png"), full_page=True)
    # While Khala is down the runtime goes on: finish the first runs, start the rest.
    for r in runs[:3]:
        await append(stack, sign, r, "run.finished", {"status": "succeeded"})
    for r in runs[3:]:
        await append(stack, sign, r, "run.started", {})
    await asyncio.sleep(0.5)
    await asyncio.to_thread(stack.khala.start)

    await page.wait_for_selector("#conn[data-state=live]", timeout=20000)
    for r in runs[:3]:
        await page.locator(f"tr[data-run='{r}'] .status-succeeded").wait_for(timeout=10000)
    for r in runs[3:]:
        await page.locator(f"tr[data-run='{r}'] .status-running").wait_for(timeout=10000)
    assert await page.evaluate("window.__noReload") == 1
    s = await stats(page)
    assert s["connects"] >= 2 and s["hydrations"] == 0  # a live query resumed; nothing hydrated
    await assert_runs_page_matches_store(page, stack)


async def assert_runs_page_matches_store(page: Any, stack: Stack) -> None:
    """The runs page shows exactly the store's newest 50 runs of the user, same versions."""
    pool = await asyncpg.connect(stack.database_url)
    try:
        loaded = await list_documents(
            pool, "runtime.run_summaries", doc_prefix="runtime/run_summary:", where={"owner": stack.user_id},
            order_by="last_event_at", ascending=False, limit=50, user_id=stack.user_id, org_id=None,
        )  # fmt: skip
    finally:
        await pool.close()
    want = [[r.doc_key, r.doc_version] for r in loaded.rows]
    await page.wait_for_function(
        "(want) => { const v = [...window.oa.client.views.values()].find((v) => v.sub.startsWith('runs#'));"
        " return v && JSON.stringify(v.entries().map((d) => [d.doc_key, d.doc_version])) === JSON.stringify(want); }",
        arg=want,
        timeout=10000,
    )


async def assert_cache_matches_snapshot(page: Any, stack: Stack) -> None:
    """Every document the server would hydrate now is in the page's cache, same version and hash."""
    token = await page.evaluate("window.oa.client.tokenProvider()")
    async with httpx.AsyncClient(base_url=stack.khala.url) as h:
        snap = (
            await h.get(
                "/sync/v1/topics/runtime.run_summaries/snapshot", headers={"Authorization": f"Bearer {token}"}
            )
        ).json()
    await page.wait_for_function(
        f"(window.oa.client.watermarks['runtime.run_summaries'] || 0) >= {snap['watermark']}", timeout=10000
    )
    held = await page.evaluate(
        "() => Object.fromEntries([...window.oa.client.documents.values()]"
        ".filter(d => d.topic === 'runtime.run_summaries').map(d => [d.doc_key, [d.doc_version, d.payload_hash]]))"
    )
    expected = {d["doc_key"]: [d["doc_version"], d["payload_hash"]] for d in snap["documents"]}
    missing = {k: v for k, v in expected.items() if held.get(k) != v}
    assert not missing, f"the page lacks or holds stale: {missing}"


async def test_stale_cursor_rehydrates_without_reload(context: Any, stack: Stack, sign: Signer) -> None:
    """A whole-topic subscription (the spend page follows its topic) told stale_cursor
    rehydrates over HTTP and resumes, without a reload. (A live query's stale cursor is in
    test_live_queries.)"""
    page = await signed_in(context, stack, "#/spend")
    await page.wait_for_function(
        "window.oa.client.stats.hydrations >= 1 && window.oa.client.state === 'live'", timeout=10000
    )
    before = await stats(page)
    # A cursor past the head is what a rebuilt history looks like: the server says stale_cursor.
    await page.evaluate(
        "() => { const c = window.oa.client; c.watermarks['runtime.run_summaries'] = 10 ** 12; c.reconnect(); }"
    )
    await page.wait_for_function(f"window.oa.client.stats.hydrations > {before['hydrations']}", timeout=10000)
    await page.wait_for_selector("#conn[data-state=live]", timeout=10000)
    run = new_run()
    await append(stack, sign, run, "run.started", {})
    await page.wait_for_function(
        "(k) => window.oa.client.get(k) !== null", arg=f"runtime/run_summary:{run}", timeout=5000
    )
    codes = await page.evaluate("window.oa.client.stats.errors.map(e => e.code)")
    assert "stale_cursor" in codes
    await assert_cache_matches_snapshot(page, stack)


async def test_token_refreshed_on_the_live_socket(context: Any, stack: Stack, sign: Signer) -> None:
    """Refresh is due 58 s before expiry of a 60 s token: it happens within seconds, on the same socket."""
    page = await signed_in(context, stack, "?token_ttl_s=60&refresh_before_s=58")
    first = await stats(page)
    await page.wait_for_function("window.oa.client.stats.refreshes >= 1", timeout=10000)
    after = await stats(page)
    assert after["connects"] == first["connects"] == 1
    assert after["expiresAt"] > first["expiresAt"]
    run = new_run()
    await append(stack, sign, run, "run.started", {})
    await page.locator(f"tr[data-run='{run}']").wait_for(timeout=5000)


@pytest.mark.slow
async def test_expired_token_refreshed_without_reload(context: Any, stack: Stack, sign: Signer) -> None:
    """Past the first token's expiry the page still gets updates on the socket it opened."""
    page = await signed_in(context, stack, "?token_ttl_s=60&refresh_before_s=20")
    await page.evaluate("window.__noReload = 1")
    first = await stats(page)
    await asyncio.sleep(max(0.0, first["expiresAt"] - time.time()) + 3)
    run = new_run()
    await append(stack, sign, run, "run.started", {})
    await page.locator(f"tr[data-run='{run}']").wait_for(timeout=5000)
    s = await stats(page)
    assert s["connects"] == 1 and s["refreshes"] >= 1 and s["errors"] == 0
    assert await page.evaluate("window.__noReload") == 1
