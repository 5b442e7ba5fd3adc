"""Signing keys and their schedule: published before they sign, published after they stop.

A key's life: `not_before` (listed in the JWKS) <= `activates_at` (first token signed)
< the next key's `activates_at` (last token signed) < `retire_after` (dropped from the JWKS;
every token it signed has expired by then, leeway included). Verifiers that cached the old
JWKS meet the new `kid` only after it has been published, and refetch on an unknown `kid`.

Private keys leave this module only as PKCS#8 encrypted with the deployment's key secret.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ALG = "ES256"


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    alg: str
    public_jwk: dict[str, Any]
    private_key: bytes  # encrypted PKCS#8 PEM
    not_before: datetime
    activates_at: datetime
    retire_after: datetime | None

    def published(self, now: datetime) -> bool:
        return self.not_before <= now and (self.retire_after is None or now < self.retire_after)


def new_key(key_secret: bytes, now: datetime, lead: timedelta) -> KeyRecord:
    """A fresh P-256 key, published now and signing from `now + lead`."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    assert isinstance(jwk, dict)
    # kid: date for operators + a thumbprint-ish suffix so two keys never share one.
    digest = hashlib.sha256(f"{jwk['x']}.{jwk['y']}".encode()).hexdigest()[:10]
    kid = f"{now:%Y%m%d}-{digest}-{secrets.token_hex(2)}"
    public = {**jwk, "kid": kid, "alg": ALG, "use": "sig"}
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(key_secret),
    )
    return KeyRecord(kid, ALG, public, encrypted, now, now + lead, None)


def load_private(record: KeyRecord, key_secret: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(record.private_key, password=key_secret)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"key {record.kid} is not an EC private key")
    return key


def signing_key(keys: Sequence[KeyRecord], now: datetime) -> KeyRecord | None:
    """The key that signs at `now`: the most recently activated live one."""
    live = [k for k in keys if k.activates_at <= now and k.published(now)]
    return max(live, key=lambda k: k.activates_at, default=None)


def jwks(keys: Sequence[KeyRecord], now: datetime) -> dict[str, Any]:
    published = sorted((k for k in keys if k.published(now)), key=lambda k: k.not_before, reverse=True)
    return {"keys": [k.public_jwk for k in published]}


def retire_after(new_activates_at: datetime, max_ttl_s: int, leeway_s: int, slack_s: float) -> datetime:
    """When keys replaced by a key activating at `new_activates_at` leave the JWKS: after
    the longest-lived token they could still sign, plus verifier leeway, plus the time a
    signer may take to notice the new key (`slack_s`)."""
    return new_activates_at + timedelta(seconds=max_ttl_s + leeway_s + slack_s)
