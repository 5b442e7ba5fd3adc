"""Sync-token claims and lifetimes: what control signs (DESIGN.md, "Control").

Pure: the caller supplies the clock, the ids and the signer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oa.exceptions import InvalidRequest

MIN_TTL_S = 60
MAX_TTL_S = 900
DEFAULT_TTL_S = 300
CLAIMS_VERSION = 1
# Resources a token can be minted for, each with its own audience (Khala states the same
# meanings in oa/khala/sync/principal.py; tests/unit/test_verifier_boundary.py holds them equal):
DEFAULT_AUDIENCES: Mapping[str, str] = {
    # Everything a Khala client does: the live socket and the HTTP reads it hydrates with
    # (snapshot, document history), so one token serves "snapshot, then subscribe".
    "khala-sync": "oa-khala-sync",
    # Khala's HTTP reads only; the socket refuses it. For holders that never keep a live
    # socket (a server-side renderer, a script): a leaked one cannot follow changes live.
    "khala-http": "oa-khala-http",
}
DEFAULT_RESOURCE = "khala-sync"


def check_ttl(ttl_s: int | None, default: int = DEFAULT_TTL_S) -> int:
    ttl = default if ttl_s is None else ttl_s
    if not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise InvalidRequest(
            f"ttl_seconds must be between {MIN_TTL_S} and {MAX_TTL_S}, got {ttl}",
            {"min": MIN_TTL_S, "max": MAX_TTL_S, "got": ttl},
        )
    return ttl


def audience_for(resource: str | None, audiences: Mapping[str, str]) -> str:
    name = resource or DEFAULT_RESOURCE
    if name not in audiences:
        raise InvalidRequest(
            f"unknown resource {name!r}; known: {', '.join(audiences)}",
            {"known_resources": list(audiences)},
        )
    return audiences[name]


@dataclass(frozen=True)
class TokenRequest:
    issuer: str
    audience: str
    user_id: str
    org_id: str
    session_id: str
    scopes: Sequence[str]
    ttl_s: int
    jti: str
    now: int


def claims(req: TokenRequest) -> dict[str, Any]:
    return {
        "iss": req.issuer,
        "aud": req.audience,
        "sub": f"user:{req.user_id}",
        "iat": req.now,
        "nbf": req.now,
        "exp": req.now + req.ttl_s,
        "jti": req.jti,
        "sid": req.session_id,
        "oa_user_id": req.user_id,
        "oa_org_id": req.org_id,
        "oa_sync_scopes": list(req.scopes),
        "oa_claims_version": CLAIMS_VERSION,
    }
