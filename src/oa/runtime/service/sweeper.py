"""Background sweeps run on a timer: lost executors, stuck reservations, unpublished decisions.

Each sweep is idempotent and safe to run on every runtime node at once, so there is no
leader election: the sweeps only ever move things forward through the same state machines
and idempotency keys as requests do. A failing sweep is logged and retried next tick; it
never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)
Sweep = tuple[str, Callable[[], Awaitable[int]]]


class Sweeper:
    def __init__(self, sweeps: Sequence[Sweep], interval_s: float) -> None:
        self._sweeps = list(sweeps)
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._loop(), name="oa-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sweep_once(self) -> dict[str, int]:
        """Run every sweep once; `{name: things moved}` (-1 for a sweep that failed)."""
        done: dict[str, int] = {}
        for name, sweep in self._sweeps:
            try:
                done[name] = await sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep %s failed; retrying next tick", name)
                done[name] = -1
        self.runs += 1
        return done

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            moved = await self.sweep_once()
            if any(v > 0 for v in moved.values()):
                log.info("sweeps: %s", moved)
