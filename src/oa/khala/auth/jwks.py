"""Verification keys: from control's JWKS (ES256), or one explicitly configured HS256 secret.

Each key carries the one algorithm it may verify (the per-key allow-list), so a token
whose header names another algorithm for that `kid` (`none`, HS256 "signed" with the
public key) is refused before any signature check. A JWKS is public, so it may never
introduce a symmetric key: `oct` entries are refused, and a key set never mixes HS256
with asymmetric keys.

An unknown `kid` makes `JwksCache.get` refetch the JWKS, at most once per
`min_refetch_interval_s`, so a flood of made-up kids cannot turn into a flood of fetches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt

log = logging.getLogger(__name__)

ASYMMETRIC_ALGS = frozenset({"ES256"})
SYMMETRIC_ALGS = frozenset({"HS256"})


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    alg: str  # the only algorithm this key verifies
    key: Any  # a public key object, or the HS256 secret bytes


class KeySet:
    """An immutable kid -> key map, all of one family (asymmetric or HS256, never both)."""

    def __init__(self, keys: Mapping[str, VerificationKey]) -> None:
        algs = {k.alg for k in keys.values()}
        if algs & SYMMETRIC_ALGS and algs - SYMMETRIC_ALGS:
            raise ValueError("a key set never mixes HS256 secrets with ES256 keys")
        self._keys = dict(keys)

    def get(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)

    def kids(self) -> list[str]:
        return list(self._keys)

    @classmethod
    def from_jwks(cls, doc: Any) -> KeySet:
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("not a JWKS document: expected {'keys': [...]}")
        keys: dict[str, VerificationKey] = {}
        for entry in doc["keys"]:
            if not isinstance(entry, dict):
                continue
            kid, alg, kty = entry.get("kid"), entry.get("alg"), entry.get("kty")
            if kty == "oct":
                raise ValueError("a JWKS may not carry symmetric (oct) keys")
            if not isinstance(kid, str) or alg not in ASYMMETRIC_ALGS or entry.get("use", "sig") != "sig":
                log.warning("ignoring JWKS entry kid=%r alg=%r: not an ES256 signing key", kid, alg)
                continue
            if kty != "EC" or entry.get("crv") != "P-256":
                log.warning("ignoring JWKS entry kid=%r: ES256 needs an EC P-256 key", kid)
                continue
            keys[kid] = VerificationKey(kid, alg, jwt.PyJWK(entry, algorithm=alg).key)
        return cls(keys)


class KeySource(Protocol):
    def cached(self, kid: str) -> VerificationKey | None: ...

    async def get(self, kid: str) -> VerificationKey | None: ...


class StaticKeys:
    """Keys fixed by configuration: the explicit HS256 mode (or a pinned key set)."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    @classmethod
    def hs256(cls, secret: bytes, kid: str) -> StaticKeys:
        if len(secret) < 32:
            raise ValueError("an HS256 secret has at least 32 bytes")
        return cls(KeySet({kid: VerificationKey(kid, "HS256", secret)}))

    def cached(self, kid: str) -> VerificationKey | None:
        return self.keys.get(kid)

    async def get(self, kid: str) -> VerificationKey | None:
        return self.keys.get(kid)


class JwksCache:
    """Control's JWKS, fetched over HTTP and cached; refetched on an unknown kid."""

    def __init__(
        self,
        url: str,
        *,
        min_refetch_interval_s: float = 10.0,
        max_age_s: float = 300.0,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.min_refetch_interval_s = min_refetch_interval_s
        self.max_age_s = max_age_s
        self._timeout = timeout_s
        self._client = client
        self._own_client = False
        self.keys = KeySet({})
        self.fetches = 0
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    def cached(self, kid: str) -> VerificationKey | None:
        if time.monotonic() - self._fetched_at > self.max_age_s:
            return None  # stale: make the caller go through get(), which refetches
        return self.keys.get(kid)

    async def get(self, kid: str) -> VerificationKey | None:
        key = self.cached(kid)
        if key is not None:
            return key
        await self.refresh()
        return self.keys.get(kid)

    async def refresh(self, force: bool = False) -> bool:
        """Fetch the JWKS unless one was fetched within the refetch interval. True if fetched."""
        async with self._lock:  # one fetch at a time; waiters reuse its result
            if not force and time.monotonic() - self._fetched_at < self.min_refetch_interval_s:
                return False
            self._fetched_at = time.monotonic()  # rate-limit failures too
            try:
                doc = await self._fetch()
                self.keys = KeySet.from_jwks(doc)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("fetching JWKS from %s failed: %s", self.url, exc)
                return False
            self.fetches += 1
            return True

    async def _fetch(self) -> Any:
        if self._client is None:  # one client for the cache's life: building one costs ~0.1 s
            self._client = httpx.AsyncClient(timeout=self._timeout)
            self._own_client = True
        resp = await self._client.get(self.url, timeout=self._timeout)
        resp.raise_for_status()
        return resp.json()

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None
