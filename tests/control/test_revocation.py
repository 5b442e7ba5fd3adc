"""Revocation of a jti, a session, all of a user's sessions: refused by a verifier within 5 s."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest

from oa.exceptions import TokenRejected
from oa.khala.auth import Revocation, RevocationList, SyncTokenVerifier
from oa.store.database import Database
from tests.control.conftest import SERVICE_TOKEN, NewUser, mint


async def refused_within(verifier: SyncTokenVerifier, token: str, code: str, budget_s: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < budget_s:
        try:
            await verifier.verify(token)
        except TokenRejected as exc:
            assert exc.code == code, exc.message
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"token still accepted after {budget_s} s")


async def next_revocation(rl: RevocationList) -> Revocation:
    async for rev in rl.subscribe():
        return rev
    raise AssertionError("unreachable")


async def test_revoke_one_token(
    new_user: NewUser, control: httpx.AsyncClient, verifier: SyncTokenVerifier, revocations: RevocationList
) -> None:
    user = await new_user()
    a, b = await mint(control, user), await mint(control, user)
    claims_a = await verifier.verify(a["token"])
    await verifier.verify(b["token"])
    watcher = asyncio.create_task(next_revocation(revocations))
    await asyncio.sleep(0)
    r = await control.post("/api/sync/sessions/revoke", json={"jti": a["jti"]}, headers=user["headers"])
    assert r.status_code == 200 and r.json()["revoked_jtis"] == [a["jti"]]
    took = await refused_within(verifier, a["token"], "token_revoked")
    assert took < 5
    rev = await asyncio.wait_for(watcher, 5)
    assert rev.kind == "jti" and claims_a.revoked_by(rev)  # the hook a sync server closes sockets with
    assert (await verifier.verify(b["token"])).jti == b["jti"]  # the other token lives on


async def test_revoke_a_session(
    new_user: NewUser, control: httpx.AsyncClient, verifier: SyncTokenVerifier
) -> None:
    user = await new_user()
    token = (await mint(control, user))["token"]
    await verifier.verify(token)
    sid = user["session"]["session_id"]
    r = await control.post("/api/sync/sessions/revoke", json={"session_id": sid}, headers=user["headers"])
    assert r.status_code == 200 and r.json()["revoked_sessions"] == [sid]
    await refused_within(verifier, token, "session_revoked")
    r = await control.post("/api/sync/token", headers=user["headers"])
    assert r.status_code == 401  # the session itself can mint no more


async def test_revoke_all_sessions_of_a_user(
    new_user: NewUser, control: httpx.AsyncClient, verifier: SyncTokenVerifier
) -> None:
    user = await new_user()
    r = await control.post(
        "/api/auth/sign-in", json={"email": user["email"], "password": "correct horse battery"}
    )
    second = {"headers": {"Authorization": f"Bearer {r.json()['session_token']}"}}
    t1, t2 = (await mint(control, user))["token"], (await mint(control, second))["token"]
    r = await control.post(
        "/api/sync/sessions/revoke", json={"all_sessions": True}, headers=second["headers"]
    )
    assert r.status_code == 200 and len(r.json()["revoked_sessions"]) == 2
    await refused_within(verifier, t1, "session_revoked")
    await refused_within(verifier, t2, "session_revoked")


async def test_cannot_revoke_what_is_not_yours(new_user: NewUser, control: httpx.AsyncClient) -> None:
    alice, mallory = await new_user(), await new_user()
    token = await mint(control, alice)
    for body in ({"jti": token["jti"]}, {"session_id": alice["session"]["session_id"]}):
        r = await control.post("/api/sync/sessions/revoke", json=body, headers=mallory["headers"])
        assert r.status_code == 404, body
    r = await control.post("/api/sync/token", headers=alice["headers"])
    assert r.status_code == 200
    bad: dict[str, Any] = {"jti": token["jti"], "all_sessions": True}
    r = await control.post("/api/sync/sessions/revoke", json=bad, headers=alice["headers"])
    assert r.status_code == 400


async def test_feed_needs_the_service_token_and_pages(new_user: NewUser, control: httpx.AsyncClient) -> None:
    assert (await control.get("/api/sync/revocations")).status_code == 401
    r = await control.get("/api/sync/revocations", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    auth = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    head = (await control.get("/api/sync/revocations", params={"limit": 10_000}, headers=auth)).json()
    cursor = head["cursor"]
    while head["more"]:
        head = (await control.get("/api/sync/revocations", params={"since": cursor}, headers=auth)).json()
        cursor = head["cursor"]
    user = await new_user()
    jtis = [(await mint(control, user))["jti"] for _ in range(3)]
    for jti in jtis:
        await control.post("/api/sync/sessions/revoke", json={"jti": jti}, headers=user["headers"])
    page = (
        await control.get("/api/sync/revocations", params={"since": cursor, "limit": 2}, headers=auth)
    ).json()
    assert [r["value"] for r in page["revocations"]] == jtis[:2] and page["more"] is True
    rest = (await control.get("/api/sync/revocations", params={"since": page["cursor"]}, headers=auth)).json()
    assert [r["value"] for r in rest["revocations"]] == jtis[2:] and rest["more"] is False
    exp = jwt.decode((await mint(control, user))["token"], options={"verify_signature": False})["exp"]
    assert all(r["expires_at"] <= exp + 61 for r in rest["revocations"])


@pytest.mark.parametrize("twice", [True])
async def test_revoking_twice_is_harmless(new_user: NewUser, control: httpx.AsyncClient, twice: bool) -> None:
    user = await new_user()
    token = await mint(control, user)
    for _ in range(2 if twice else 1):
        r = await control.post(
            "/api/sync/sessions/revoke", json={"jti": token["jti"]}, headers=user["headers"]
        )
        assert r.status_code == 200


async def test_concurrent_revocations_all_reach_the_feed(
    new_user: NewUser, control: httpx.AsyncClient, revocations: RevocationList
) -> None:
    user = await new_user()
    jtis = [(await mint(control, user))["jti"] for _ in range(20)]
    await asyncio.gather(
        *(control.post("/api/sync/sessions/revoke", json={"jti": j}, headers=user["headers"]) for j in jtis)
    )
    deadline = time.monotonic() + 5
    while not all(revocations.jti_revoked(j) for j in jtis):
        assert time.monotonic() < deadline, "some revocations never reached the verifier"
        await asyncio.sleep(0.1)


async def test_expired_revocations_leave_the_feed_and_are_pruned(
    control: httpx.AsyncClient, db: Database
) -> None:
    from oa.control.adapters import tokens_sql

    old, recent = f"old-{time.time_ns()}", f"recent-{time.time_ns()}"
    async with db.transaction() as conn:
        await tokens_sql.lock_revocations(conn)
        for value, age in ((old, "2 days"), (recent, "1 minute")):
            await conn.execute(
                "INSERT INTO control.revocations (kind, value, reason, expires_at)"
                f" VALUES ('jti', $1, 'test', now() - interval '{age}')",
                value,
            )
    auth = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    feed = (await control.get("/api/sync/revocations", params={"limit": 10_000}, headers=auth)).json()
    assert not {old, recent} & {r["value"] for r in feed["revocations"]}
    assert await tokens_sql.prune(db.pool) >= 1
    left = {r["value"] for r in await db.fetch("SELECT value FROM control.revocations")}
    assert old not in left and recent in left
