"""Building the sync server's token verifier from the environment (no import of control).

* `OA_CONTROL_URL`: control's base URL. Its JWKS (`/.well-known/jwks.json`) is fetched
  lazily and refetched on an unknown `kid`; its revocation feed is polled with the service
  token (`OA_CONTROL_SERVICE_TOKEN`, else `$OA_HOME/control-service.token`).
* `OA_SYNC_TOKEN_ISSUER`: the exact `iss` to accept (default: the control URL, which is
  what control uses when nothing overrides it).
* `OA_KHALA_JWKS_FILE`: verify against a fixed JWKS file instead (offline, tests).
* `OA_KHALA_ALLOWED_ORIGINS`: comma-separated Origin allow-list for browsers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from oa.khala.auth.jwks import JwksCache, KeySet, KeySource, StaticKeys
from oa.khala.auth.revocations import HttpRevocationSource, RevocationList
from oa.khala.auth.verifier import SyncTokenVerifier, VerifierConfig
from oa.khala.sync.principal import HTTP_AUDIENCE, SYNC_AUDIENCE


@dataclass
class VerifierSetup:
    verifier: SyncTokenVerifier
    revocations: RevocationList | None


def verifier_from_env(env: Mapping[str, str] | None = None, home: Path | None = None) -> VerifierSetup:
    env = os.environ if env is None else env
    home = home or Path(env.get("OA_HOME", ".oa"))
    origins = (
        frozenset(o.strip() for o in env.get("OA_KHALA_ALLOWED_ORIGINS", "").split(",") if o.strip()) or None
    )
    jwks_file = env.get("OA_KHALA_JWKS_FILE")
    control = env.get("OA_CONTROL_URL", "").rstrip("/")
    issuer = env.get("OA_SYNC_TOKEN_ISSUER") or control
    if not issuer:
        raise SystemExit(
            "Khala needs OA_CONTROL_URL (or OA_SYNC_TOKEN_ISSUER with OA_KHALA_JWKS_FILE) to verify tokens"
        )
    keys: KeySource
    if jwks_file:
        keys = StaticKeys(KeySet.from_jwks(orjson.loads(Path(jwks_file).read_bytes())))
    else:
        keys = JwksCache(f"{control}/.well-known/jwks.json")
    revocations = None
    if control:
        token = env.get("OA_CONTROL_SERVICE_TOKEN")
        token_file = home / "control-service.token"
        if not token and token_file.exists():
            token = token_file.read_text().strip()
        if token:
            revocations = RevocationList(HttpRevocationSource(f"{control}/api/sync/revocations", token))
    # Both of Khala's resources; the socket then refuses HTTP-only tokens (`tokens.for_sockets`).
    config = VerifierConfig(
        issuer=issuer,
        audience=SYNC_AUDIENCE,
        also_audiences=frozenset({HTTP_AUDIENCE}),
        allowed_origins=origins,
    )
    return VerifierSetup(SyncTokenVerifier(config, keys, revocations), revocations)
