"""An open dashboard tab survives `make run` restarting with control on another port: the
tab re-reads config.json from Khala (which knows control's new URL) and goes live again
without a reload (issue 13, item 7)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from tests.support.deployment import Cli, OaRun
from tests.support.servers import free_port

PASSWORD = "a password for moving ports"


async def test_an_open_tab_reconnects_after_control_moved(
    database_url: str, browser: Any, tmp_path: Path
) -> None:
    home = tmp_path / ".oa"
    khala_port, first_control, second_control = free_port(), free_port(), free_port()
    run = OaRun(home, database_url)
    await asyncio.to_thread(run.start, 0, 90.0, first_control, khala_port)
    context = await browser.new_context()
    try:
        email = f"mover-{uuid.uuid4().hex[:8]}@example.com"
        cli = Cli(home, {"OA_DATABASE_URL": database_url})
        added = await asyncio.to_thread(cli, "control", "user", "add", email, OA_CONTROL_PASSWORD=PASSWORD)
        assert added.returncode == 0, added.stderr
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{khala_port}/dashboard/")
        await page.fill("input[name=email]", email)
        await page.fill("input[name=password]", PASSWORD)
        await page.press("input[name=password]", "Enter")
        await page.wait_for_selector("#conn[data-state=live]", timeout=15000)

        assert await asyncio.to_thread(run.interrupt) == 0
        await page.wait_for_selector("#conn:not([data-state=live])", timeout=15000)
        await asyncio.to_thread(run.start, 0, 90.0, second_control, khala_port)  # same Khala, control moved
        await page.wait_for_selector("#conn[data-state=live]", timeout=60000)
        config = await page.evaluate("() => window.oa.config.control_url")
        assert config == f"http://127.0.0.1:{second_control}"
        assert await page.evaluate(
            "() => !!sessionStorage.getItem('oa.dashboard.session')"
        )  # still signed in
    finally:
        await context.close()
        run.stop()
