"""Password sign-in, sessions stored hashed in Postgres, sign-out, failure rate limit."""

from __future__ import annotations

import hashlib

import httpx

from oa.control.service.accounts import Accounts
from oa.store.database import Database
from tests.control.conftest import PASSWORD, NewUser


async def test_sign_in_returns_a_session_stored_only_as_a_hash(
    new_user: NewUser, control: httpx.AsyncClient, db: Database
) -> None:
    user = await new_user()
    token = user["session"]["session_token"]
    assert token.startswith("oas_") and user["session"]["token_type"] == "Bearer"
    row = await db.fetchrow(
        "SELECT token_hash, user_id FROM control.sessions WHERE session_id = $1",
        user["session"]["session_id"],
    )
    assert row is not None and row["user_id"] == user["user_id"]
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    stored = await db.fetchval("SELECT password_hash FROM control.users WHERE user_id = $1", user["user_id"])
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    r = await control.get("/api/auth/session", headers=user["headers"])
    assert r.status_code == 200
    assert r.json()["email"] == user["email"] and len(r.json()["sync_scopes"]) == 4


async def test_wrong_password_and_unknown_email_look_the_same(
    new_user: NewUser, control: httpx.AsyncClient
) -> None:
    user = await new_user()
    wrong = await control.post(
        "/api/auth/sign-in", json={"email": user["email"], "password": "nope-nope-nope"}
    )
    unknown = await control.post(
        "/api/auth/sign-in", json={"email": "nobody@example.com", "password": "nope-nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


async def test_failed_sign_ins_are_rate_limited_per_email(
    new_user: NewUser, control: httpx.AsyncClient
) -> None:
    user = await new_user()
    other = await new_user()
    for _ in range(3):
        r = await control.post(
            "/api/auth/sign-in", json={"email": user["email"], "password": "guess-guess-1"}
        )
        assert r.status_code == 401
    r = await control.post("/api/auth/sign-in", json={"email": user["email"], "password": PASSWORD})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) > 0
    # Another email is not affected.
    r = await control.post("/api/auth/sign-in", json={"email": other["email"], "password": PASSWORD})
    assert r.status_code == 200


async def test_sign_out_revokes_the_session(new_user: NewUser, control: httpx.AsyncClient) -> None:
    user = await new_user()
    r = await control.post("/api/auth/sign-out", headers=user["headers"])
    assert r.status_code == 200 and r.json()["revoked_sessions"] == [user["session"]["session_id"]]
    for path in ("/api/auth/session", "/api/sync/token"):
        r = await (control.get if path.endswith("session") else control.post)(path, headers=user["headers"])
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "unauthorized"


async def test_no_or_forged_session_is_unauthorized(control: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer oas_forged"}, {"Authorization": "Bearer something"}):
        r = await control.post("/api/sync/token", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_duplicate_email_is_a_conflict(accounts: Accounts, new_user: NewUser) -> None:
    user = await new_user()
    try:
        await accounts.add_user(user["email"].upper(), PASSWORD)
    except Exception as exc:
        assert getattr(exc, "code", None) == "conflict"
    else:
        raise AssertionError("a second user with the same email was created")
