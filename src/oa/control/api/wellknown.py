"""`/.well-known`: the JWKS verifiers fetch, and an OpenID discovery document naming it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from oa.control.domain.scopes import SYNC_SCOPES
from oa.control.service.keyring import Keyring
from oa.control.settings import ControlSettings
from oa.http import json_response
from oa.http.strict import StrictJSONRoute

router = APIRouter(tags=["keys"], route_class=StrictJSONRoute)
# Short enough that a verifier sees a new key well within the rotation lead; verifiers
# also refetch at once (rate-limited) when they meet an unknown kid.
JWKS_MAX_AGE_S = 60


@router.get("/.well-known/jwks.json", summary="Public keys that verify sync tokens")
async def jwks(request: Request) -> Response:
    keyring: Keyring = request.app.state.keyring
    return json_response(
        await keyring.published_jwks(),
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"},
    )


@router.get("/.well-known/openid-configuration", summary="OpenID-style discovery document")
async def discovery(request: Request) -> Response:
    settings: ControlSettings = request.app.state.settings
    keyring: Keyring = request.app.state.keyring
    base = settings.issuer.rstrip("/")
    return json_response(
        {
            "issuer": settings.issuer,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "token_endpoint": f"{base}/api/sync/token",
            "revocation_endpoint": f"{base}/api/sync/sessions/revoke",
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [keyring.mode],
            "token_endpoint_auth_methods_supported": ["bearer"],
            "scopes_supported": list(SYNC_SCOPES),
            "claims_supported": [
                "iss",
                "aud",
                "sub",
                "iat",
                "nbf",
                "exp",
                "jti",
                "sid",
                "oa_user_id",
                "oa_org_id",
                "oa_sync_scopes",
                "oa_claims_version",
            ],
            "oa_audiences": dict(settings.audiences),
        },
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"},
    )
