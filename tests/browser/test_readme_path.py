"""The README's "Using it", followed literally by a newcomer: a fresh `oa run` (a child process
on a temp OA_HOME, its own embedded Postgres, free ports), the account, `oa login`, appends as
that account, then the dashboard in Chromium showing the run change live. The commands are
read from the README's code block, so when the README changes this test changes with it.
Screenshots of every page at desktop and phone width go to test-artifacts/browser/."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.deployment import Cli, OaRun

README = Path(__file__).resolve().parents[2] / "README.md"
PASSWORD = "the newcomer's password"
DESKTOP, PHONE = {"width": 1200, "height": 900}, {"width": 390, "height": 844}


def using_it() -> list[str]:
    """The commands of the README's "Using it" block, comments stripped, in order."""
    text = README.read_text()
    block = re.search(r"## Using it\n+```bash\n(.*?)```", text, re.S)
    assert block, "README has no 'Using it' bash block"
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def step(prefix: str) -> str:
    """The first README command starting with `prefix` (the test fails if the README drops it)."""
    found = [c for c in using_it() if c.startswith(prefix)]
    assert found, f"README 'Using it' no longer has a command starting with {prefix!r}"
    return found[0]


@pytest.fixture(scope="module")
def newcomer() -> Iterator[tuple[OaRun, Cli]]:
    # Not under pytest's tmp dir: as root, pgserver runs initdb as its own user, which needs
    # to traverse every parent (pytest's base dir is 0700, and shared with other runs).
    folder = Path(tempfile.mkdtemp(prefix="oa-fresh-clone-"))
    folder.chmod(0o755)
    run = OaRun(folder / ".oa")  # no OA_DATABASE_URL: the embedded Postgres, as `make run`
    try:
        run.start(timeout=180)
        yield run, Cli(run.home, {"OA_CONTROL_PASSWORD": PASSWORD})
        assert run.interrupt() == 0  # Ctrl-C stops it cleanly ...
        assert not (run.home / "deployment.env").exists()  # ... and clients no longer find it
    finally:
        run.stop()
        shutil.rmtree(folder, ignore_errors=True)


def oa(cli: Cli, command: str) -> subprocess.CompletedProcess[str]:
    args = shlex.split(command)
    assert args[0] == "oa"
    out = cli(*args[1:])
    assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr
    return out


async def open_page(context: Any) -> Any:
    page = await context.new_page()
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: page.problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("response", lambda r: page.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return page


async def shoot(page: Any, artifacts: Path, name: str) -> None:
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(size)
        await page.wait_for_timeout(300)  # charts redraw at the new width on their next poll
        await page.screenshot(path=str(artifacts / f"readme-{name}-{label}.png"), full_page=True)
    await page.set_viewport_size(DESKTOP)


async def test_the_readme_path_ends_with_the_run_live_in_the_dashboard(
    newcomer: tuple[OaRun, Cli], browser: Any, artifacts: Path
) -> None:
    run, cli = newcomer
    added = oa(cli, step("oa control user add"))
    user_id = added.stdout.strip()
    email = shlex.split(step("oa login"))[-1]
    oa(cli, step("oa login"))
    appends = [c for c in using_it() if c.startswith("oa runs append demo")]
    assert len(appends) >= 3, "README: start, a delta, then finish the run"
    for command in appends[:-1]:
        oa(cli, command)
    shown = oa(cli, step("oa runs show demo"))
    assert f"owner user:{user_id}" in shown.stdout  # the dashboard's account owns it

    # The README's curl, from the folder that holds .oa, with the URLs deployment.env names.
    curl = step("curl")
    env = cli.env(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    out = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", f". .oa/deployment.env; {curl}"],
        cwd=run.home.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and '"run_id":"demo"' in out.stdout.replace(" ", ""), out.stdout + out.stderr

    dashboard = run.env_values()["KHALA_SELF_HOSTED_URL"] + "/dashboard/"
    assert "/dashboard/" in step("echo $KHALA_SELF_HOSTED_URL")
    context = await browser.new_context(viewport=DESKTOP)
    try:
        page = await open_page(context)
        await page.goto(dashboard)
        await page.wait_for_selector("input[name=email]")
        await page.fill("input[name=email]", email)
        await page.fill("input[name=password]", "wrong password")
        await page.press("input[name=password]", "Enter")
        await page.locator("form.signin .error").filter(has_text="wrong email or password").wait_for()
        await shoot(page, artifacts, "signin-error")
        page.problems.clear()  # the 401 above was the point
        await page.fill("input[name=password]", PASSWORD)
        await page.press("input[name=password]", "Enter")
        await page.wait_for_selector("#conn[data-state=live]", timeout=15000)

        row = page.locator("tr[data-run='demo']")
        await row.locator(".status-running").wait_for(timeout=10000)
        assert await row.get_attribute("data-seq") == str(len(appends) - 1)
        await shoot(page, artifacts, "runs")

        await row.locator("a").click()
        await page.wait_for_selector("#run-events tr[data-seq='1']")
        oa(cli, appends[-1])  # the run finishes while the page is open
        await page.locator("#run-status.status-succeeded").wait_for(timeout=10000)
        connects = await page.evaluate("() => window.oa.client.stats.connects")
        assert connects == 1  # live over one socket: no reload, no reconnect
        await shoot(page, artifacts, "run")

        await page.goto(dashboard + "#/workers")
        await page.locator("#workers-empty").filter(has_text="oa workers list").wait_for()
        await shoot(page, artifacts, "workers")
        await page.goto(dashboard + "#/topics")
        await page.wait_for_selector("tr[data-topic='runtime.run_summaries']")
        await shoot(page, artifacts, "topics")
        await page.goto(dashboard + "#/topics/runtime.run_summaries")
        await page.wait_for_selector("tr[data-doc='runtime/run_summary:demo']")
        await shoot(page, artifacts, "topic")
        await page.goto(dashboard + "#/topics/runtime.codex_worker_events")  # no workers: empty, and says why
        await page.locator("#docs-empty").filter(has_text="No documents in this topic").wait_for()
        await page.goto(dashboard + "#/doc/runtime.run_summaries/runtime/run_summary:demo")
        await page.wait_for_selector("#doc-history tr[data-watermark]")
        await shoot(page, artifacts, "document")
        await page.goto(dashboard + "#/runs/not-mine")
        await page.locator("#run-empty").filter(has_text="oa runs append not-mine run.started").wait_for()
        await shoot(page, artifacts, "run-empty")
        await page.goto(dashboard + "#/operators")
        await page.wait_for_selector("#operators-note")
        await shoot(page, artifacts, "operators")

        await page.goto(dashboard + "#/health")
        await page.wait_for_selector("#projections-body tr[data-projection]")
        await page.wait_for_timeout(2500)  # a second lag sample
        await shoot(page, artifacts, "health")
        ticks = await page.locator("#lag-chart text.tick").all_text_contents()
        assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks  # counts: whole numbers
        assert "run pages" in await page.locator("#e2e-note").inner_text()

        await page.set_viewport_size(PHONE)
        await page.wait_for_timeout(300)
        nav = await page.locator("header nav").bounding_box()
        link = await page.locator("header nav a").first.bounding_box()
        assert nav and link and nav["height"] < 2 * link["height"], "the nav wraps at phone width"
        header = await page.locator("header").bounding_box()
        assert header and header["height"] < 4 * link["height"], "the header takes more than two rows"
        clipped = await page.evaluate(
            "() => [...document.querySelectorAll('main table')].filter(t => t.scrollWidth > t.parentElement.clientWidth + 1).length"
        )
        assert clipped == 0, "a table is wider than the phone screen"
        assert page.problems == [], page.problems  # no console errors, no 404
        # A favicon, declared and served (headless Chromium does not ask for /favicon.ico
        # itself, so the browser would not show the 404 a desktop browser logs).
        icon = await page.evaluate("() => document.querySelector('link[rel=icon]')?.href")
        assert icon, "no <link rel=icon>: browsers log a 404 for /favicon.ico"
        served = await page.request.get(icon)
        assert served.status == 200 and "svg" in served.headers["content-type"]
    finally:
        await context.close()
