"""Stop a deployment nobody uses: the anonymous agent deployment runs detached, so it ends
itself once no agent has held its presence lock for a while.

Each MCP server using the deployment holds a shared flock on `agents.lock` for its whole
life (the kernel drops it when that process dies, even by kill -9); the deployment is idle
while it can take the lock exclusively.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from oa.deployment import nobody_present


async def stop_when_idle(lock: Path, idle_s: float) -> None:
    """SIGTERM this process (a clean stop) after `idle_s` seconds without any agent."""
    since: float | None = None
    while True:
        await asyncio.sleep(min(5.0, idle_s / 4))
        if not nobody_present(lock):
            since = None
            continue
        since = since or time.monotonic()
        if time.monotonic() - since >= idle_s:
            os.kill(os.getpid(), signal.SIGTERM)
            return
