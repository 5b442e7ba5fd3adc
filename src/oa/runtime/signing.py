"""Caller signatures for `/internal/v1`: short-lived HS256 tokens naming the principal.

The header `X-OA-RUNTIME-SIGNATURE` carries a JWT signed with the runtime's caller secret
(only trusted callers, such as Codex worker hosts and `oa token runtime`, hold it). The
principal is the token's `sub`; a body can never claim one.

The org. A signature may also carry `oa_org_id`: the org the signer vouches the principal
acts for. The runtime takes a run's (and a worker's) org from there and nowhere else; a
payload `org_id` must equal it (issue 10: a tenant claimed another org in `run.started`
and its run appeared on that org's screens). Why the signature and not a membership feed
from control: the runtime already trusts whoever holds the caller secret (worker hosts,
`oa token runtime`) to name the principal, and the org is an attribute of that principal,
checked by the signer against control's memberships when it signs; a feed published from
control to the runtime would add a dependency between the rooms and a window in which a
removed member still looks like one. A signature without the claim acts for no org.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

from oa.exceptions import InvalidRequest, Unauthorized

HEADER = "X-OA-RUNTIME-SIGNATURE"
AUDIENCE = "oa-runtime-internal"
ISSUER = "oa-runtime-caller"
MAX_TTL_S = 900
DEFAULT_TTL_S = 300
LEEWAY_S = 30
PRINCIPAL_RE = re.compile(r"^(user|service|worker):[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
ORG_CLAIM = "oa_org_id"
ORG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


@dataclass(frozen=True)
class Caller:
    """Who signed a request: the principal, and the org the signer vouches it acts for."""

    principal: str
    org: str | None = None


def load_or_create_secret(path: Path) -> bytes:
    """The deployment's caller secret, created (0600) on first use."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    path.touch(mode=0o600)
    path.write_bytes(secret)
    return secret


def sign_caller(
    secret: bytes,
    principal: str,
    ttl_s: int = DEFAULT_TTL_S,
    now: float | None = None,
    org: str | None = None,
) -> str:
    """Sign `principal` (and, with `org`, the org it acts for: check membership first)."""
    if not PRINCIPAL_RE.match(principal):
        raise InvalidRequest(
            f"principal {principal!r} must look like user:<id>, service:<name> or worker:<id>"
        )
    if org is not None and not ORG_RE.match(org):
        raise InvalidRequest(f"org {org!r} is not an org id (letters, digits, _.:@-, up to 128)")
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise InvalidRequest(f"ttl must be between 1 and {MAX_TTL_S} seconds, got {ttl_s}")
    iat = int(now if now is not None else time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": principal,
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if org is not None:
        claims[ORG_CLAIM] = org
    return jwt.encode(claims, secret, algorithm="HS256")


# Verified signatures, until they expire: a writer reuses its signature for many requests,
# and checking the HMAC and claims was 17% of a single append's CPU (bench/append.py,
# py-spy). Keyed by secret and token, so a rotated secret never matches an old entry.
_VERIFIED: dict[tuple[bytes, str], tuple[Caller, float]] = {}
_VERIFIED_MAX = 10_000


def verify_caller(secret: bytes, token: str | None) -> Caller:
    """Return who signed a valid signature, else raise `Unauthorized` saying why."""
    if token:
        hit = _VERIFIED.get((secret, token))
        if hit is not None and time.time() < hit[1] + LEEWAY_S:
            return hit[0]
    caller, exp = _verify_uncached(secret, token)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[(secret, token or "")] = (caller, exp)
    return caller


def _verify_uncached(secret: bytes, token: str | None) -> tuple[Caller, float]:
    if not token:
        raise Unauthorized(
            f"missing {HEADER} header; sign the request (for local use: oa token runtime --user ID)"
        )
    if len(token) > 4096:
        raise Unauthorized(f"{HEADER} is too long to be a caller signature")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized(f"{HEADER} has expired; mint a fresh one", {"reason": "expired"}) from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized(
            f"{HEADER} is not valid yet (nbf/iat in the future)", {"reason": "immature"}
        ) from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(
            f"{HEADER} is not a valid caller signature ({exc})", {"reason": "invalid"}
        ) from None
    if claims["exp"] - claims["iat"] > MAX_TTL_S + LEEWAY_S:
        raise Unauthorized(
            f"{HEADER} lives longer than {MAX_TTL_S}s; mint a short-lived one", {"reason": "ttl"}
        )
    principal = claims["sub"]
    if not isinstance(principal, str) or not PRINCIPAL_RE.match(principal):
        raise Unauthorized(f"{HEADER} names no valid principal", {"reason": "principal"})
    org = claims.get(ORG_CLAIM)
    if org is not None and not (isinstance(org, str) and ORG_RE.match(org)):
        raise Unauthorized(f"{HEADER} carries an {ORG_CLAIM} that is not an org id", {"reason": "org"})
    return Caller(principal, org), float(claims["exp"])
