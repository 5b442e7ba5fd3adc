"""Streamable HTTP for the MCP server: loopback only, Origin/Host checks, bearer auth.

A missing or wrong bearer gets 401 with `WWW-Authenticate` pointing at the SDK's OAuth
protected-resource metadata; a browser page from another origin (DNS rebinding) is refused
by the SDK's transport security. The token is a local secret (OA_MCP_HTTP_TOKEN, else
created under OA_HOME), compared in constant time.
"""

from __future__ import annotations

import hmac

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette

from oa.agent.server import Options, TargetProvider, build_server

LOOPBACK = "127.0.0.1"


class StaticBearer:
    """The SDK's TokenVerifier protocol over one shared secret."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token=token, client_id="oa-mcp-local", scopes=[])
        return None


def http_app(provider: TargetProvider, port: int, token: str, options: Options | None = None) -> Starlette:
    base = f"http://{LOOPBACK}:{port}"
    server = build_server(
        provider,
        options,
        token_verifier=StaticBearer(token),
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(base),
            resource_server_url=AnyHttpUrl(f"{base}/mcp"),
            validate_token_resource=False,
        ),
    )
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{LOOPBACK}:{port}", f"localhost:{port}"],
        allowed_origins=[f"http://{LOOPBACK}:{port}", f"http://localhost:{port}"],
    )
    return server.streamable_http_app(transport_security=security, host=LOOPBACK)
