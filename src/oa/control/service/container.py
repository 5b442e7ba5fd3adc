"""Control's composition: database, keyring (with its reload loop), the issued-token log
(group commit), accounts, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI

from oa.control.adapters import tokens_sql
from oa.control.api.app import create_app
from oa.control.service.accounts import Accounts
from oa.control.service.issued_log import IssuedLog
from oa.control.service.keyring import Keyring
from oa.control.service.tokens import SyncTokens
from oa.control.settings import ControlSettings
from oa.store.database import Database


def build_control_app(database_url: str, settings: ControlSettings, pool_size: int = 10) -> FastAPI:
    async def start(app: FastAPI) -> None:
        db = await Database.connect(database_url, max_size=pool_size)
        keyring = Keyring(db, settings)
        await keyring.start()
        app.state.db = db
        app.state.keyring = keyring
        app.state.accounts = Accounts(db, settings)
        issued = IssuedLog(db)
        issued.start()
        app.state.issued = issued
        app.state.tokens = SyncTokens(db, keyring, settings, issued)
        app.state.pruner = asyncio.create_task(_prune_forever(db))

    async def stop(app: FastAPI) -> None:
        app.state.pruner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app.state.pruner
        await app.state.issued.stop()
        await app.state.keyring.stop()
        await app.state.db.close()

    return create_app(settings, start, stop)


PRUNE_EVERY_S = 600.0


async def _prune_forever(db: Database) -> None:
    """Drop revocations no live token can match any more (keeps the feed small)."""
    while True:
        await asyncio.sleep(PRUNE_EVERY_S)
        try:
            await tokens_sql.prune(db.pool)
        except Exception:
            logging.getLogger(__name__).exception("pruning revocations failed")
