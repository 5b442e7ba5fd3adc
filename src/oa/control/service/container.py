"""Control's composition: database, keyring (with its reload loop), the issued-token log
(group commit), accounts, tokens."""

from __future__ import annotations

from fastapi import FastAPI

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

    async def stop(app: FastAPI) -> None:
        await app.state.issued.stop()
        await app.state.keyring.stop()
        await app.state.db.close()

    return create_app(settings, start, stop)
