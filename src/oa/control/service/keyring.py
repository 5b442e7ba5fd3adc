"""The keyring: which key signs now, which keys the JWKS lists, bootstrap and rotation.

ES256 by default, from `control.signing_keys`, re-read every `key_reload_s` so a rotation
done by another process (`oa control rotate-keys`) is picked up. HS256 only when the
operator configured a shared secret; then no ES256 key is used or published, so the two
are never mixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from oa.control.adapters import keys_sql
from oa.control.domain import keys as keydomain
from oa.control.domain.tokens import MAX_TTL_S
from oa.control.settings import ControlSettings
from oa.exceptions import Conflict, InternalError
from oa.store.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signer:
    kid: str
    alg: str
    key: Any  # an EC private key, or the HS256 secret

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})


@dataclass(frozen=True)
class Rotation:
    new_kid: str
    published_at: datetime
    activates_at: datetime
    old_kids_retire_after: datetime


def hs256_kid(secret: bytes) -> str:
    return "hs256-" + hashlib.sha256(b"oa-kid:" + secret).hexdigest()[:12]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Keyring:
    def __init__(self, db: Database, settings: ControlSettings) -> None:
        self._db = db
        self._settings = settings
        self._keys: list[keydomain.KeyRecord] = []
        self._private: dict[str, Any] = {}
        self._loaded_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def mode(self) -> str:
        return "HS256" if self._settings.hs256_secret is not None else "ES256"

    async def start(self) -> None:
        if self.mode == "ES256":
            await self.ensure_key()
            await self.reload()
            self.signer()  # fail at start, not at the first mint, if the key secret is wrong
            self._task = asyncio.create_task(self._reload_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.key_reload_s)
            try:
                await self.reload()
            except Exception:  # keep signing with what we have; say so
                log.exception("reloading signing keys failed")

    async def reload(self) -> None:
        self._keys = await keys_sql.all_keys(self._db.pool)
        self._loaded_at = time.monotonic()

    async def ensure_key(self) -> None:
        """Create the first key (signing at once) if there is none."""
        async with self._db.transaction() as conn:
            await keys_sql.lock_keys(conn)
            if await keys_sql.all_keys(conn):
                return
            key = keydomain.new_key(self._settings.key_secret, utcnow(), timedelta(0))
            await keys_sql.insert_key(conn, key)
            log.info("created signing key %s", key.kid)

    async def rotate(self, lead_s: float | None = None) -> Rotation:
        """Publish a new key now that signs from now + lead; schedule the old keys to leave
        the JWKS once every token they could sign has expired."""
        if self.mode != "ES256":
            raise Conflict("control signs with a configured HS256 secret; rotate that secret instead")
        lead = self._settings.rotation_lead_s if lead_s is None else lead_s
        now = utcnow()
        async with self._db.transaction() as conn:
            await keys_sql.lock_keys(conn)
            key = keydomain.new_key(self._settings.key_secret, now, timedelta(seconds=lead))
            retire = keydomain.retire_after(
                key.activates_at, MAX_TTL_S, self._settings.verifier_leeway_s, self._settings.key_reload_s
            )
            await keys_sql.retire_unscheduled(conn, retire)
            await keys_sql.insert_key(conn, key)
        await self.reload()
        return Rotation(key.kid, key.not_before, key.activates_at, retire)

    def signer(self, now: datetime | None = None) -> Signer:
        secret = self._settings.hs256_secret
        if secret is not None:
            return Signer(hs256_kid(secret), "HS256", secret)
        record = keydomain.signing_key(self._keys, now or utcnow())
        if record is None:
            raise InternalError("no signing key is active; run `oa control rotate-keys`")
        private = self._private.get(record.kid)
        if private is None:
            try:
                private = keydomain.load_private(record, self._settings.key_secret)
            except (ValueError, TypeError):
                raise InternalError(
                    f"signing key {record.kid} cannot be decrypted: it was stored with another key "
                    "secret. Give every control process of this deployment the same "
                    "OA_CONTROL_KEY_SECRET (or $OA_HOME/control-keys.secret)"
                ) from None
            self._private[record.kid] = private
        return Signer(record.kid, record.alg, private)

    def jwks(self, now: datetime | None = None) -> dict[str, Any]:
        if self.mode != "ES256":
            return {"keys": []}  # a shared secret is never published
        return keydomain.jwks(self._keys, now or utcnow())

    async def published_jwks(self) -> dict[str, Any]:
        """The JWKS as the database has it now: a key is listed the moment a rotation
        commits, even before this process's reload loop sees it (so always before it signs)."""
        if self.mode != "ES256":
            return {"keys": []}
        await self.reload()
        return self.jwks()

    def records(self) -> list[keydomain.KeyRecord]:
        return list(self._keys)
