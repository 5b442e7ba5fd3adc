"""Policy decisions and spend over a real socket against a real Postgres."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from oa.cli.main import app as cli
from oa.runtime.service.appender import GroupAppender
from oa.runtime.service.spend import SpendService
from oa.store.database import Database
from tests.conftest import SECRET

S = "/internal/v1/spend"
P = "/internal/v1/policy/evaluate"
Signer = Callable[[str], dict[str, str]]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start_run(client: httpx.AsyncClient) -> str:
    run_id = uid("run")
    r = await client.post(f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started"})
    assert r.status_code == 201
    return run_id


async def authorize(client: httpx.AsyncClient, **limits: Any) -> str:
    auth_id = uid("auth")
    body = {"authorization_id": auth_id, "mode": "delegated_budget", "max_total_sats": 1000, **limits}
    r = await client.post(f"{S}/authorizations", json=body)
    assert r.status_code == 201, r.text
    return auth_id


async def run_events(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    page = (await client.get(f"/internal/v1/runs/{run_id}/events", params={"limit": 1000})).json()
    return list(page["events"])


async def test_reserve_commit_release_lifecycle(client: httpx.AsyncClient) -> None:
    run_id, auth_id = await start_run(client), await authorize(client)
    body = {"authorization_id": auth_id, "run_id": run_id, "tool_call_id": "tc1", "amount_sats": 100}
    first = await client.post(f"{S}/reservations", json=body)
    assert first.status_code == 201, first.text
    rsv = first.json()["reservation"]
    assert rsv["state"] == "reserved" and first.json()["decision"]["decision"] == "allow"
    again = await client.post(f"{S}/reservations", json=body)
    assert again.status_code == 200 and again.json()["idempotentReplay"] is True
    assert again.json()["reservation"]["reservation_id"] == rsv["reservation_id"]
    clash = await client.post(f"{S}/reservations", json={**body, "amount_sats": 101})
    assert clash.status_code == 409 and "tc1" in clash.json()["error"]["message"]

    url = f"{S}/reservations/{rsv['reservation_id']}"
    done = await client.post(f"{url}/commit", json={"amount_sats": 60})
    assert done.status_code == 200 and done.json()["reservation"]["committed_sats"] == 60
    assert (await client.post(f"{url}/commit")).json()["idempotentReplay"] is True
    late = await client.post(f"{url}/release")
    assert late.status_code == 409 and "cannot be released" in late.json()["error"]["message"]
    auth = (await client.get(f"{S}/authorizations/{auth_id}")).json()
    assert (auth["spent_sats"], auth["reserved_sats"], auth["available_sats"]) == (60, 0, 940)

    other = await client.post(f"{S}/reservations", json={**body, "tool_call_id": "tc2"})
    url2 = f"{S}/reservations/{other.json()['reservation']['reservation_id']}"
    assert (await client.post(f"{url2}/release", json={"reason": "tool failed"})).status_code == 200
    late2 = await client.post(f"{url2}/commit")
    assert late2.status_code == 409 and "cannot be committed" in late2.json()["error"]["message"]
    auth = (await client.get(f"{S}/authorizations/{auth_id}")).json()
    assert (auth["spent_sats"], auth["reserved_sats"]) == (60, 0)


async def test_budget_exhaustion_is_recorded_on_the_run(client: httpx.AsyncClient) -> None:
    run_id, auth_id = await start_run(client), await authorize(client, max_total_sats=150)
    body = {"authorization_id": auth_id, "run_id": run_id, "tool_call_id": "tc1", "amount_sats": 100}
    assert (await client.post(f"{S}/reservations", json=body)).status_code == 201
    refused = await client.post(f"{S}/reservations", json={**body, "tool_call_id": "tc2"})
    assert refused.status_code == 409, refused.text
    err = refused.json()["error"]
    assert err["details"]["reason_code"] == "REASON_CODE_BUDGET_EXHAUSTED"
    assert err["details"]["budget"]["reserved_sats"] == 100 and "budget" in err["message"]
    events = await run_events(client, run_id)
    types = [e["event_type"] for e in events]
    assert types == ["run.started", "policy.decision", "policy.decision", "policy.budget_exhausted"]
    deny = events[2]["payload"]
    assert deny["decision"] == "deny" and deny["decision_id"] == err["details"]["decision_id"]
    assert events[3]["payload"]["decision_id"] == deny["decision_id"]
    # The same question again is the same decision, not a second event.
    assert (await client.post(f"{S}/reservations", json={**body, "tool_call_id": "tc2"})).status_code == 409
    assert len(await run_events(client, run_id)) == 4


async def test_evaluate_tool_calls(client: httpx.AsyncClient) -> None:
    run_id, auth_id = await start_run(client), await authorize(client, allowed_tools=["search"])
    free = {"run_id": run_id, "tool_call_id": "tc1", "tool": "shell"}
    r = await client.post(P, json=free)
    assert r.status_code == 201 and r.json()["decision"] == "allow" and r.json()["reservation_id"] is None
    again = await client.post(P, json=free)
    assert again.status_code == 200 and again.json()["decision_id"] == r.json()["decision_id"]
    deny = await client.post(P, json={**free, "tool_call_id": "tc2", "authorization_id": auth_id})
    assert deny.json()["decision"] == "deny" and deny.json()["reason_code"] == "REASON_CODE_TOOL_NOT_ALLOWED"
    paid = await client.post(
        P,
        json={
            "run_id": run_id,
            "tool_call_id": "tc3",
            "tool": "search",
            "amount_sats": 5,
            "authorization_id": auth_id,
        },
    )
    assert paid.json()["decision"] == "allow" and paid.json()["reservation_id"].startswith("rsv_")
    decisions = [
        e["payload"] for e in await run_events(client, run_id) if e["event_type"] == "policy.decision"
    ]
    assert [(d["tool_call_id"], d["decision"]) for d in decisions] == [
        ("tc1", "allow"),
        ("tc2", "deny"),
        ("tc3", "allow"),
    ]
    catalog = (await client.get("/internal/v1/policy/catalog")).json()
    assert "budget_exhausted" in catalog["reason_codes"] and catalog["catalog_version"]


async def test_revoked_and_interactive_authorizations(client: httpx.AsyncClient) -> None:
    run_id, auth_id = await start_run(client), await authorize(client)
    rv = await client.post(f"{S}/authorizations/{auth_id}/revoke", json={"reason": "lost device"})
    assert rv.status_code == 200 and rv.json()["revoked_at"]
    body = {"authorization_id": auth_id, "run_id": run_id, "tool_call_id": "tc1", "amount_sats": 1}
    r = await client.post(f"{S}/reservations", json=body)
    assert r.status_code == 409 and r.json()["error"]["details"]["reason"] == "authorization_revoked"
    inter = await authorize(client, mode="interactive")
    r = await client.post(f"{S}/reservations", json={**body, "authorization_id": inter})
    assert r.json()["error"]["details"]["reason"] == "interactive_approval_required"


async def test_authorization_is_idempotent_and_immutable(client: httpx.AsyncClient) -> None:
    body = {"authorization_id": uid("auth"), "mode": "delegated_budget", "max_total_sats": 10}
    assert (await client.post(f"{S}/authorizations", json=body)).status_code == 201
    assert (await client.post(f"{S}/authorizations", json=body)).status_code == 200
    clash = await client.post(f"{S}/authorizations", json={**body, "max_total_sats": 11})
    assert clash.status_code == 409 and "revoke" in clash.json()["error"]["message"]


@pytest.mark.parametrize(
    ("amount", "word"),
    [(-1, "greater than 0"), (0, "greater than 0"), (1.5, "integer"), ("10", "integer"), (10**16, "less than"),
     (2**63, "less than"), (10**30, "64 bits")],
)  # fmt: skip
async def test_money_refuses_bad_amounts(
    client: httpx.AsyncClient, db: Database, amount: object, word: str
) -> None:
    run_id, auth_id = await start_run(client), await authorize(client)
    before = await db.fetchval("SELECT count(*) FROM runtime.spend_reservations")
    body = {"authorization_id": auth_id, "run_id": run_id, "tool_call_id": "tc1", "amount_sats": amount}
    r = await client.post(f"{S}/reservations", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request" and word in r.json()["error"]["message"], r.text
    a = await client.post(
        f"{S}/authorizations", json={"authorization_id": uid("a"), "mode": "deny", "max_total_sats": amount}
    )
    assert a.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM runtime.spend_reservations") == before
    assert len(await run_events(client, run_id)) == 1


@pytest.mark.slow
async def test_never_overspend_under_concurrency(client: httpx.AsyncClient, db: Database) -> None:
    """Hundreds of concurrent reserves on one authorization: spent + reserved stays within
    the limit at every step, and committed reservations add up to exactly what was spent."""
    limit = 15_000
    run_id, auth_id = await start_run(client), await authorize(client, max_total_sats=limit)
    rng = random.Random(7)
    amounts = [rng.randint(1, 150) for _ in range(300)]
    watching = True
    seen: list[int] = []

    async def watch() -> None:
        while watching:
            row = await db.fetchrow(
                "SELECT spent_sats + reserved_sats AS used FROM runtime.spend_authorizations WHERE authorization_id = $1",
                auth_id,
            )
            assert row is not None
            seen.append(row["used"])
            await asyncio.sleep(0.005)

    async def reserve(i: int, amount: int) -> httpx.Response:
        body = {
            "authorization_id": auth_id,
            "run_id": run_id,
            "tool_call_id": f"tc{i}",
            "amount_sats": amount,
        }
        return await client.post(f"{S}/reservations", json=body)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(reserve(i, a) for i, a in enumerate(amounts)))
    ok = [r.json()["reservation"] for r in results if r.status_code == 201]
    refused = [r for r in results if r.status_code == 409]
    assert len(ok) + len(refused) == len(amounts)
    assert refused, "the budget should have run out"
    assert sum(r["amount_sats"] for r in ok) <= limit

    async def settle(rsv: dict[str, Any]) -> None:
        url = f"{S}/reservations/{rsv['reservation_id']}"
        if rsv["amount_sats"] % 3 == 0:
            r = await client.post(f"{url}/release")
        else:
            r = await client.post(f"{url}/commit", json={"amount_sats": rsv["amount_sats"] - 1})
        assert r.status_code == 200, r.text

    await asyncio.gather(*(settle(r) for r in ok))
    watching = False
    await watcher
    assert seen and max(seen) <= limit
    auth = (await client.get(f"{S}/authorizations/{auth_id}")).json()
    committed = await db.fetchval(
        "SELECT coalesce(sum(committed_sats), 0) FROM runtime.spend_reservations WHERE authorization_id = $1"
        " AND state = 'committed'",
        auth_id,
    )
    assert auth["reserved_sats"] == 0 and auth["spent_sats"] == committed
    assert committed == sum(r["amount_sats"] - 1 for r in ok if r["amount_sats"] % 3)
    decisions = [e for e in await run_events(client, run_id) if e["event_type"] == "policy.decision"]
    assert len(decisions) == len(amounts)


async def test_stuck_reservations_are_swept_and_reconciled(
    client: httpx.AsyncClient, db: Database, runtime_url: str, tmp_path: Path
) -> None:
    run_id, auth_id = await start_run(client), await authorize(client)
    body = {"authorization_id": auth_id, "run_id": run_id, "tool_call_id": "tc1", "amount_sats": 40}
    rsv = (await client.post(f"{S}/reservations", json=body)).json()["reservation"]
    await db.pool.execute(
        "UPDATE runtime.spend_reservations SET deadline_at = now() - interval '1 second' WHERE reservation_id = $1",
        rsv["reservation_id"],
    )
    appender = GroupAppender(db)
    svc = SpendService(db, appender, reservation_deadline_s=60)
    assert await svc.sweep_stuck() >= 1
    listed = (
        await client.get(
            f"{S}/reservations", params={"state": "reconcile_required", "authorization_id": auth_id}
        )
    ).json()
    assert [r["reservation_id"] for r in listed["reservations"]] == [rsv["reservation_id"]]
    url = f"{S}/reservations/{rsv['reservation_id']}"
    blocked = await client.post(f"{url}/commit")
    assert blocked.status_code == 409 and "reconcil" in blocked.json()["error"]["message"]
    assert (await client.get(f"{S}/authorizations/{auth_id}")).json()["reserved_sats"] == 40
    env = {
        "OA_RUNTIME_URL": runtime_url,
        "OA_RUNTIME_CALLER_SECRET": SECRET.decode(),
        "OA_HOME": str(tmp_path),
    }

    def oa(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["spend", "reconcile", *args, "--user", "alice"], env=env)
        return result.exit_code, result.output

    code, text = await asyncio.to_thread(oa, "--authorization", auth_id)
    assert code == 0 and rsv["reservation_id"] in text, text
    code, text = await asyncio.to_thread(
        oa, "--resolve", rsv["reservation_id"], "--as", "committed", "--amount", "30"
    )
    assert code == 0 and "committed" in text, text
    code, text = await asyncio.to_thread(oa, "--resolve", rsv["reservation_id"], "--as", "released")
    assert code == 1 and "cannot" in text, text
    auth = (await client.get(f"{S}/authorizations/{auth_id}")).json()
    assert (auth["spent_sats"], auth["reserved_sats"]) == (30, 0)


async def test_unpublished_decisions_are_published_once(client: httpx.AsyncClient, db: Database) -> None:
    run_id = await start_run(client)
    r = await client.post(P, json={"run_id": run_id, "tool_call_id": "tc1", "tool": "search"})
    await db.pool.execute(
        "UPDATE runtime.policy_decisions SET published_at = NULL, created_at = now() - interval '1 minute'"
        " WHERE decision_id = $1",
        r.json()["decision_id"],
    )
    appender = GroupAppender(db)
    appender.start()
    try:
        assert (
            await SpendService(db, appender, reservation_deadline_s=60).publish_pending(older_than_s=30) >= 1
        )
    finally:
        await appender.stop()
    assert [e["event_type"] for e in await run_events(client, run_id)] == ["run.started", "policy.decision"]
    assert await db.fetchval(
        "SELECT published_at IS NOT NULL FROM runtime.policy_decisions WHERE decision_id = $1",
        r.json()["decision_id"],
    )


async def test_other_principal_is_refused(client: httpx.AsyncClient, runtime_url: str, sign: Signer) -> None:
    run_id, auth_id = await start_run(client), await authorize(client)
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign("user:mallory")) as other:
        assert (await other.get(f"{S}/authorizations/{auth_id}")).status_code == 403
        body = {"authorization_id": auth_id, "run_id": run_id, "tool_call_id": "tc1", "amount_sats": 1}
        assert (await other.post(f"{S}/reservations", json=body)).status_code == 403
