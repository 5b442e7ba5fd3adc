"""The runtime's composition: database, group appender, journal listener, services."""

from __future__ import annotations

from fastapi import FastAPI

from oa.runtime.adapters.listener import JournalListener
from oa.runtime.api.app import create_app
from oa.runtime.service.appender import GroupAppender
from oa.runtime.service.replay import ReplayService
from oa.runtime.service.runs import RunService
from oa.runtime.service.spend import SpendService
from oa.runtime.service.sweeper import Sweeper
from oa.runtime.service.workers import WorkerService
from oa.runtime.settings import RuntimeSettings
from oa.store.database import Database


def build_runtime_app(database_url: str, settings: RuntimeSettings, pool_size: int = 10) -> FastAPI:
    async def start(app: FastAPI) -> None:
        db = await Database.connect(database_url, max_size=pool_size)
        appender = GroupAppender(db, max_batch_events=settings.max_batch_events)
        appender.start()
        listener = JournalListener(database_url)
        await listener.start()
        app.state.db = db
        app.state.appender = appender
        app.state.listener = listener
        app.state.runs = RunService(db, appender, listener, settings.stream_replay_window)
        app.state.replay = ReplayService(db, app.state.runs)
        workers = WorkerService(
            db,
            appender,
            listener,
            stale_after_ms=settings.worker_stale_after_ms,
            replay_window=settings.stream_replay_window,
        )
        app.state.workers = workers
        spend = SpendService(db, appender, reservation_deadline_s=settings.reservation_deadline_s)
        await spend.start()
        app.state.spend = spend
        sweeper = Sweeper(
            [
                ("lost_executors", lambda: workers.sweep_lost_executors(settings.worker_lost_after_ms)),
                ("stuck_reservations", spend.sweep_stuck),
                ("unpublished_decisions", spend.publish_pending),
            ],
            settings.sweep_interval_s,
        )
        sweeper.start()
        app.state.sweeper = sweeper

    async def stop(app: FastAPI) -> None:
        await app.state.sweeper.stop()
        await app.state.spend.stop()
        await app.state.appender.stop()
        await app.state.listener.stop()
        await app.state.db.close()

    return create_app(settings, start, stop)
