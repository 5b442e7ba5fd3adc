"""Request and response bodies of control's API (they also make its OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from oa.http.strict import NoNul  # what reaches Postgres text cannot hold NUL


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class SignIn(Strict):
    email: Annotated[StrictStr, Field(min_length=3, max_length=320), NoNul]
    password: Annotated[StrictStr, Field(min_length=1, max_length=1024)]
    org: Annotated[StrictStr, Field(max_length=100), NoNul] | None = None


class SessionOut(BaseModel):
    session_token: str
    token_type: str
    session_id: str
    user_id: str
    org_id: str
    expires_at: str


class WhoAmI(BaseModel):
    session_id: str
    user_id: str
    email: str
    org_id: str
    sync_scopes: list[str]


class TokenRequest(Strict):
    scopes: Annotated[list[Annotated[StrictStr, Field(max_length=100)]], Field(max_length=20)] | None = None
    ttl_seconds: StrictInt | None = Field(default=None, description="60..900; default 300")
    resource: Annotated[StrictStr, Field(max_length=100)] | None = Field(
        default=None,
        description="khala-sync (default: socket and HTTP reads) or khala-http (HTTP reads only)",
    )


class TokenOut(BaseModel):
    token: str
    token_type: str
    expires_in: int
    issued_at: str
    expires_at: str
    scopes: list[str]
    audience: str
    kid: str
    jti: str


class RevokeRequest(Strict):
    """Exactly one of: a token id, a session id, or all of your sessions."""

    jti: Annotated[StrictStr, Field(max_length=100), NoNul] | None = None
    session_id: Annotated[StrictStr, Field(max_length=100), NoNul] | None = None
    all_sessions: StrictBool = False


class RevokeOut(BaseModel):
    revoked_jtis: list[str]
    revoked_sessions: list[str]


class Revocation(BaseModel):
    id: int
    kind: str
    value: str
    expires_at: int


class RevocationPage(BaseModel):
    revocations: list[Revocation]
    cursor: int
    more: bool
