"""The sync-token verifier Khala runs on every connection (and every token refresh).

Checks, each failure with its own code (the `TokenRejected` family in `oa.exceptions`):
size (`token_too_large`), shape (`token_malformed`), the algorithm against the verifier's
allow-list and the key's own algorithm (`alg_not_allowed`), the `kid` (`unknown_kid`, after
one rate-limited JWKS refetch), the signature (`bad_signature`: any edit to header,
payload or scopes), exact `iss` and `aud` (`wrong_issuer`, `wrong_audience`: a token for
another resource), time with at most 60 s of leeway (`token_expired`,
`token_not_yet_valid`), required claims (`missing_claim`), their types and the 900 s
lifetime cap (`bad_claims`), scopes (`bad_scopes`), revocation (`token_revoked`,
`session_revoked`) and the optional Origin allow-list (`origin_not_allowed`).

The signature is checked by PyJWT's algorithm objects (cryptography underneath), with the
key's own algorithm; parsing and claims are checked here so that each failure maps to one
code (and because PyJWT's general-purpose decoder spent half of the verify time checking
base64 characters in Python; the strict regex here does it in C). A token whose signature and claims passed is remembered
(bounded), and a repeat presentation re-checks only time, revocation and Origin: a
signature over the same bytes cannot have changed.

Imports nothing from `oa.control` or `oa.runtime` (a test checks it).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson

from oa.exceptions import (
    AlgNotAllowed,
    BadClaims,
    BadScopes,
    BadSignature,
    MissingClaim,
    OriginNotAllowed,
    SessionRevoked,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenRevoked,
    TokenTooLarge,
    UnknownKid,
    WrongAudience,
    WrongIssuer,
)
from oa.khala.auth.jwks import KeySource
from oa.khala.auth.revocations import Revocation, RevocationList
from oa.khala.topics import TOPIC_NAMES

MAX_LEEWAY_S = 60
MAX_TTL_S = 900
CLAIMS_VERSION = 1
REQUIRED = ("iss", "aud", "sub", "iat", "exp", "jti", "sid", "oa_user_id", "oa_org_id", "oa_sync_scopes")
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class VerifierConfig:
    issuer: str
    audience: str  # exactly this resource's audience, e.g. "oa-khala-sync"
    # Further audiences this verifier accepts exactly (the sync server also takes tokens
    # minted for its HTTP reads only; each entry point then checks `SyncClaims.audience`).
    also_audiences: frozenset[str] = frozenset()
    algorithms: frozenset[str] = frozenset({"ES256"})
    leeway_s: int = 30
    max_token_bytes: int = 8192
    allowed_origins: frozenset[str] | None = None  # None: Origin not checked
    known_scopes: frozenset[str] = frozenset(TOPIC_NAMES)
    cache_size: int = 50_000

    def __post_init__(self) -> None:
        if not 0 <= self.leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway must be 0..{MAX_LEEWAY_S} s")
        if self.algorithms & {"HS256"} and self.algorithms - {"HS256"}:
            raise ValueError("HS256 is never allowed alongside ES256: configure one or the other")
        if not self.algorithms or "none" in {a.lower() for a in self.algorithms}:
            raise ValueError("allow at least one real signing algorithm, never 'none'")


@dataclass(frozen=True)
class SyncClaims:
    user_id: str
    org_id: str
    scopes: frozenset[str]
    jti: str
    sid: str
    issued_at: int
    not_before: int
    expires_at: int
    kid: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def audience(self) -> str:
        aud: str = self.raw["aud"]
        return aud

    @property
    def sub(self) -> str:
        return f"user:{self.user_id}"

    def missing_topics(self, topics: Iterable[str]) -> list[str]:
        """Topics a subscription asks for that this token does not grant."""
        return [t for t in topics if t not in self.scopes]

    def revoked_by(self, rev: Revocation) -> bool:
        return (rev.kind == "jti" and rev.value == self.jti) or (rev.kind == "sid" and rev.value == self.sid)


class SyncTokenVerifier:
    def __init__(
        self, config: VerifierConfig, keys: KeySource, revocations: RevocationList | None = None
    ) -> None:
        self.config = config
        self.keys = keys
        self.revocations = revocations
        self._seen: dict[str, SyncClaims] = {}

    async def verify(self, token: str, *, origin: str | None = None, now: float | None = None) -> SyncClaims:
        now = time.time() if now is None else now
        self._check_origin(origin)
        if len(token) > self.config.max_token_bytes:
            raise TokenTooLarge(
                f"the token is {len(token)} bytes; at most {self.config.max_token_bytes} are accepted",
                {"max_bytes": self.config.max_token_bytes},
            )
        claims = self._seen.get(token)
        if claims is None:
            claims = await self._verify_new(token, now)
            if len(self._seen) >= self.config.cache_size:
                self._seen.pop(next(iter(self._seen)))
            self._seen[token] = claims
        self.recheck(claims, now)
        return claims

    def recheck(self, claims: SyncClaims, now: float | None = None) -> None:
        """What can change after a token was accepted: the clock and revocations. Live
        connections call this periodically."""
        now = time.time() if now is None else now
        leeway = self.config.leeway_s
        if claims.expires_at <= now - leeway:
            raise TokenExpired("the sync token has expired; fetch a fresh one from control")
        if claims.not_before > now + leeway or claims.issued_at > now + leeway:
            raise TokenNotYetValid("the sync token is not valid yet (nbf/iat in the future)")
        if self.revocations is not None:
            if self.revocations.jti_revoked(claims.jti):
                raise TokenRevoked("this sync token was revoked", {"jti": claims.jti})
            if self.revocations.sid_revoked(claims.sid):
                raise SessionRevoked("the session this token belongs to was revoked; sign in again")

    def forget(self) -> None:
        self._seen.clear()

    def _check_origin(self, origin: str | None) -> None:
        allowed = self.config.allowed_origins
        if allowed is not None and origin is not None and origin not in allowed:
            raise OriginNotAllowed(f"origin {origin!r} may not connect", {"origin": origin})

    async def _verify_new(self, token: str, now: float) -> SyncClaims:
        header_b64, payload_b64, sig_b64 = _split(token)
        header = _json_object(header_b64, "header")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise TokenMalformed("the token header names no algorithm (alg)")
        if alg not in self.config.algorithms:
            raise AlgNotAllowed(
                f"algorithm {alg!r} is not accepted; only {', '.join(sorted(self.config.algorithms))}",
                {"alg": alg},
            )
        if "crit" in header or "b64" in header:
            raise TokenMalformed("the token uses JWS extensions (crit/b64) this verifier does not support")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 200:
            raise TokenMalformed("the token header names no key (kid)")
        key = await self.keys.get(kid)
        if key is None:
            raise UnknownKid(f"no published key has kid {kid!r}", {"kid": kid})
        if key.alg != alg:
            raise AlgNotAllowed(f"key {kid} verifies only {key.alg}, not {alg}", {"alg": alg, "kid": kid})
        signature = _b64(sig_b64, "signature")
        # PyJWT's algorithm object does the cryptography (raw r||s -> DER for ES256,
        # constant-time compare for HS256), with the key's own algorithm only.
        if not _algorithm(key.alg).verify(f"{header_b64}.{payload_b64}".encode(), key.key, signature):
            raise BadSignature("the token's signature does not match its contents")
        return self._claims(_json_object(payload_b64, "payload"), kid, now)

    def _claims(self, p: dict[str, Any], kid: str, now: float) -> SyncClaims:
        for name in REQUIRED:
            if p.get(name) is None:
                raise MissingClaim(f"the token has no {name!r} claim", {"claim": name})
        if p["iss"] != self.config.issuer:
            raise WrongIssuer(f"tokens from {p['iss']!r} are not trusted here", {"iss": p["iss"]})
        aud = p["aud"]  # a list (JWT allows one) is refused too: unhashable, so test str first
        if not isinstance(aud, str) or (
            aud != self.config.audience and aud not in self.config.also_audiences
        ):
            raise WrongAudience(
                f"this token is for {p['aud']!r}, not {self.config.audience!r}",
                {"aud": p["aud"], "expected": self.config.audience},
            )
        iat, exp, nbf = p["iat"], p["exp"], p.get("nbf", p["iat"])
        if not all(type(v) is int for v in (iat, exp, nbf)):
            raise BadClaims("iat, nbf and exp must be integers (seconds)")
        leeway = self.config.leeway_s
        if exp <= now - leeway:
            raise TokenExpired("the sync token has expired; fetch a fresh one from control")
        if nbf > now + leeway or iat > now + leeway:
            raise TokenNotYetValid("the sync token is not valid yet (nbf/iat in the future)")
        if exp - iat > MAX_TTL_S:
            raise BadClaims(f"the token lives {exp - iat} s; at most {MAX_TTL_S} s are accepted")
        user_id, org_id, jti, sid = p["oa_user_id"], p["oa_org_id"], p["jti"], p["sid"]
        if not all(isinstance(v, str) and v for v in (user_id, org_id, jti, sid)):
            raise BadClaims("oa_user_id, oa_org_id, jti and sid must be non-empty strings")
        if p["sub"] != f"user:{user_id}":
            raise BadClaims("sub and oa_user_id name different users")
        if p.get("oa_claims_version") != CLAIMS_VERSION:
            raise BadClaims(f"unsupported oa_claims_version {p.get('oa_claims_version')!r}")
        scopes = p["oa_sync_scopes"]
        if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
            raise BadScopes("oa_sync_scopes must be a non-empty list of topic names")
        unknown = [s for s in scopes if s not in self.config.known_scopes]
        if unknown or len(set(scopes)) != len(scopes):
            raise BadScopes(f"unknown or repeated sync scopes: {unknown or scopes}", {"scopes": scopes})
        return SyncClaims(user_id, org_id, frozenset(scopes), jti, sid, iat, nbf, exp, kid, p)


def _split(token: str) -> tuple[str, str, str]:
    """Three base64url parts. The signature may be empty here (an `alg: none` token) so that
    such a token is refused as `alg_not_allowed`, the reason that names the attack."""
    parts = token.split(".")
    if len(parts) != 3 or not _SEGMENT.match(parts[0]) or not _SEGMENT.match(parts[1]):
        raise TokenMalformed("a sync token is three base64url parts separated by dots")
    if parts[2] and not _SEGMENT.match(parts[2]):
        raise TokenMalformed("the token signature is not base64url")
    return parts[0], parts[1], parts[2]


def _b64(segment: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenMalformed(f"the token {what} is not base64url") from None


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_b64(segment, what))
    except orjson.JSONDecodeError:
        raise TokenMalformed(f"the token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenMalformed(f"the token {what} is not a JSON object")
    return value


@functools.cache
def _algorithm(name: str) -> Any:
    return jwt.get_algorithm_by_name(name)
