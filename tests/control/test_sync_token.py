"""`POST /api/sync/token`: the claims, lifetimes, scope narrowing, resources."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from oa.store.database import Database
from tests.control.conftest import ISSUER, NewUser, mint

ALL = [
    "runtime.run_summaries",
    "runtime.codex_worker_summaries",
    "runtime.codex_worker_events",
    "runtime.notifications",
]


async def test_token_body_and_claims(new_user: NewUser, control: httpx.AsyncClient, db: Database) -> None:
    user = await new_user()
    before = int(time.time())
    body = await mint(control, user)
    assert set(body) >= {"token", "token_type", "expires_in", "issued_at", "expires_at", "scopes"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300 and body["scopes"] == ALL
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "ES256" and header["kid"]
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["iss"] == ISSUER and claims["aud"] == "oa-khala-sync"
    assert claims["sub"] == f"user:{user['user_id']}" and claims["oa_user_id"] == user["user_id"]
    assert claims["oa_org_id"] == user["session"]["org_id"] and claims["sid"] == user["session"]["session_id"]
    assert claims["oa_sync_scopes"] == ALL and claims["oa_claims_version"] == 1
    assert before <= claims["iat"] == claims["nbf"] <= before + 2 and claims["exp"] == claims["iat"] + 300
    assert body["issued_at"].endswith("Z") and body["expires_at"].endswith("Z")
    row = await db.fetchrow(
        "SELECT user_id, audience, kid FROM control.issued_tokens WHERE jti = $1", claims["jti"]
    )
    assert row is not None and row["user_id"] == user["user_id"] and row["kid"] == header["kid"]
    again = await mint(control, user)
    assert jwt.decode(again["token"], options={"verify_signature": False})["jti"] != claims["jti"]


@pytest.mark.parametrize(("ttl", "status"), [(59, 400), (60, 200), (900, 200), (901, 400), (-5, 400)])
async def test_ttl_bounds(new_user: NewUser, control: httpx.AsyncClient, ttl: int, status: int) -> None:
    user = await new_user()
    r = await control.post("/api/sync/token", json={"ttl_seconds": ttl}, headers=user["headers"])
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["expires_in"] == ttl
    else:
        assert r.json()["error"]["code"] == "invalid_request" and "60 and 900" in r.json()["error"]["message"]


async def test_scopes_never_wider_than_granted(new_user: NewUser, control: httpx.AsyncClient) -> None:
    user = await new_user(scopes=["runtime.run_summaries", "runtime.notifications"])
    body = await mint(control, user)
    assert body["scopes"] == ["runtime.run_summaries", "runtime.notifications"]
    narrow = await mint(control, user, scopes=["runtime.notifications"])
    assert narrow["scopes"] == ["runtime.notifications"]
    assert jwt.decode(narrow["token"], options={"verify_signature": False})["oa_sync_scopes"] == [
        "runtime.notifications"
    ]
    r = await control.post(
        "/api/sync/token",
        json={
            "scopes": [
                "runtime.run_summaries",
                "runtime.codex_worker_events",
                "runtime.codex_worker_summaries",
            ]
        },
        headers=user["headers"],
    )
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "forbidden"
    assert err["details"]["denied_scopes"] == [
        "runtime.codex_worker_summaries",
        "runtime.codex_worker_events",
    ]
    assert "runtime.codex_worker_events" in err["message"]
    r = await control.post("/api/sync/token", json={"scopes": ["runtime.secrets"]}, headers=user["headers"])
    assert r.status_code == 400 and r.json()["error"]["details"]["unknown_scopes"] == ["runtime.secrets"]


async def test_user_without_grants_gets_403(new_user: NewUser, control: httpx.AsyncClient) -> None:
    user = await new_user(scopes=[])
    r = await control.post("/api/sync/token", headers=user["headers"])
    assert r.status_code == 403 and r.json()["error"]["details"]["allowed_scopes"] == []


async def test_each_resource_has_its_own_audience(new_user: NewUser, control: httpx.AsyncClient) -> None:
    user = await new_user()
    http = await mint(control, user, resource="khala-http")
    assert http["audience"] == "oa-khala-http"
    assert jwt.decode(http["token"], options={"verify_signature": False})["aud"] == "oa-khala-http"
    r = await control.post("/api/sync/token", json={"resource": "billing"}, headers=user["headers"])
    assert r.status_code == 400


async def test_extra_fields_are_refused(new_user: NewUser, control: httpx.AsyncClient) -> None:
    user = await new_user()
    r = await control.post("/api/sync/token", json={"sub": "user:admin"}, headers=user["headers"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
