"""Building the sync server's token verifier from `KhalaSettings` (no import of control).

* `control_url`: control's base URL. Its JWKS (`/.well-known/jwks.json`) is fetched
  lazily and refetched on an unknown `kid`; its revocation feed is polled with
  `control_service_token` (`OA_CONTROL_SERVICE_TOKEN`, else `$OA_HOME/control-service.token`).
* `token_issuer`: the exact `iss` to accept (default: the control URL, which is what
  control uses when nothing overrides it).
* `jwks_file`: verify against a fixed JWKS file instead (offline, tests).
* `allowed_origins`: an Origin allow-list for browsers.
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
from oa.khala.settings import KhalaSettings
from oa.khala.sync.principal import HTTP_AUDIENCE, SYNC_AUDIENCE


@dataclass
class VerifierSetup:
    verifier: SyncTokenVerifier
    revocations: RevocationList | None


def verifier_for(settings: KhalaSettings) -> VerifierSetup:
    control = (settings.control_url or "").rstrip("/")
    issuer = settings.token_issuer or control
    keys: KeySource
    if settings.jwks_file is not None:
        keys = StaticKeys(KeySet.from_jwks(orjson.loads(settings.jwks_file.read_bytes())))
    else:
        if not control:
            raise ValueError("Khala needs OA_CONTROL_URL to fetch control's JWKS (or OA_KHALA_JWKS_FILE)")
        keys = JwksCache(f"{control}/.well-known/jwks.json")
    revocations = None
    if control and settings.control_service_token:
        revocations = RevocationList(
            HttpRevocationSource(f"{control}/api/sync/revocations", settings.control_service_token)
        )
    # Both of Khala's resources; the socket then refuses HTTP-only tokens (`tokens.for_sockets`).
    config = VerifierConfig(
        issuer=issuer,
        audience=SYNC_AUDIENCE,
        also_audiences=frozenset({HTTP_AUDIENCE}),
        allowed_origins=settings.allowed_origins,
    )
    return VerifierSetup(SyncTokenVerifier(config, keys, revocations), revocations)


def verifier_from_env(env: Mapping[str, str] | None = None, home: Path | None = None) -> VerifierSetup:
    """`verifier_for` the settings these variables describe (entry points and tests only;
    the servers are built by `oa.bootstrap` from `KhalaSettings`)."""
    env = os.environ if env is None else env
    home = home or Path(env.get("OA_HOME", ".oa"))
    try:
        settings = KhalaSettings.from_env(env, database_url="", home=home)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return verifier_for(settings)
