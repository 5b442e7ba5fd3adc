"""Opaque bearer secrets (sessions, the service token): random, stored only as sha256.

They carry 256 bits of entropy, so a fast hash is enough; slow hashing is for passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SESSION_PREFIX = "oas_"


def new_session_token() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
