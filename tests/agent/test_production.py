"""A `prod` deployment: refused without a grant, the gate's CLI records one, expiry and
revocation take effect at the next call, writes need write scope, everything is audited,
and nothing the agent says about the class changes any of it."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from oa.agent import gate
from tests.agent.conftest import ClientFor, Deployment
from tests.support.mcp_content import text_of

GATE_SH = Path(__file__).resolve().parents[2] / "deploy" / "khala" / "mcp-production-access-gate.sh"
GATE_ENV = {
    gate.ENABLED: "1",
    gate.TICKET: "CHG-4242",
    gate.REASON: "check projector lag",
    gate.ACK: "YES",
    gate.TTL: "5",
}


async def oa(
    dep: Deployment, tmp: Path, *args: str, extra: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`oa mcp ...` in a child process (the servers keep running in this loop meanwhile)."""
    env_file = tmp / "prod.env"
    env_file.write_text(dep.env_file_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OA_", "KHALA_"))}
    env.update(extra or {})
    proc = await asyncio.create_subprocess_exec(
        *args[:1] if args[0] == str(GATE_SH) else (sys.executable, "-m", "oa.cli.main", "mcp"),
        *(args[1:] if args[0] == str(GATE_SH) else args),
        "--env-file", str(env_file),
        env={**env, "OA_BIN": str(Path(sys.executable).parent / "oa")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def grant(dep: Deployment, ticket: str, scope: str = "read") -> None:
    """What `oa mcp gate` records (its CLI runs end to end in the slow test below)."""
    body = {"ticket": ticket, "reason": "test", "requester": "tester", "scope": scope, "ttl_minutes": 5}
    async with dep.admin() as a:
        assert (await a.post("/grants", json=body)).status_code == 201


async def audit_trail(dep: Deployment) -> list[dict[str, Any]]:
    async with dep.admin() as a:
        entries: list[dict[str, Any]] = (await a.get("/mcp-audit", params={"limit": 20})).json()["entries"]
    return entries


@pytest.mark.usefixtures("no_grants")
async def test_refused_without_a_grant_even_when_the_agent_says_dev(
    prod: Deployment, mcp_client: ClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KHALA_DEPLOYMENT_CLASS", "dev")  # the agent's side claims dev
    monkeypatch.setenv("OA_DEPLOYMENT_CLASS", "dev")
    async with mcp_client(prod) as c:
        for args in ({}, {"deployment_class": "dev"}, {"class": "dev", "mode": "anonymous"}):
            r = await c.call_tool("status", args)
            assert r.is_error, args
            text = text_of(r)
            assert "production" in text and "oa mcp gate" in text and "OA_CHANGE_TICKET" in text
        r = await c.call_tool("documents", {"topic": "runtime.run_summaries"})
        assert r.is_error and "no live production-access grant" in text_of(r)
    trail = await audit_trail(prod)
    assert trail[0]["tool"] == "documents" and trail[0]["outcome"] == "refused: no live grant"
    assert trail[0]["ticket"] is None


@pytest.mark.slow
@pytest.mark.usefixtures("no_grants")
async def test_gate_refusals_exit_1_and_record_nothing(prod: Deployment, tmp_path: Path) -> None:
    code, out, err = await oa(prod, tmp_path, str(GATE_SH), extra={})
    assert code == 1 and out == ""
    assert (
        err.strip()
        == f"MCP production access denied: {gate.ENABLED} is not set; the default posture is disabled (set {gate.ENABLED}=1 to request access)"
    )
    code, _, err = await oa(prod, tmp_path, "gate", extra={**GATE_ENV, gate.TTL: "90"})
    assert code == 1 and "MCP production access denied: " in err and "between 1 and 60" in err
    async with prod.admin() as a:
        assert (await a.get("/grants", params={"live": "true"})).json()["grants"] == []


@pytest.mark.usefixtures("no_grants")
async def test_grant_read_scope_then_expiry_mid_session(
    prod: Deployment, mcp_client: ClientFor, superuser: asyncpg.Connection
) -> None:
    await grant(prod, "CHG-4242")
    async with mcp_client(prod) as c:
        status = await c.call_tool("status", {})
        assert not status.is_error, text_of(status)
        assert status.structured_content is not None
        assert status.structured_content["deployment"]["class"] == "prod"
        assert status.structured_content["grant"]["ticket"] == "CHG-4242"

        refused = await c.call_tool("rebuild", {})
        assert (
            refused.is_error and "read scope only" in text_of(refused) and "--scope write" in text_of(refused)
        )

        # The grant's time runs out (the database's clock decides) while the session is open.
        await superuser.execute(
            "UPDATE khala_admin.grants SET created_at = now() - interval '10 minutes',"
            " expires_at = now() - interval '1 second' WHERE ticket = 'CHG-4242'"
        )
        expired = await c.call_tool("status", {})
        assert expired.is_error and "expired" in text_of(expired)
    trail = await audit_trail(prod)
    assert [e["outcome"] for e in trail[:3]] == [
        "refused: no live grant",
        "refused: grant is read-only",
        "ok",
    ]
    assert trail[1]["ticket"] == trail[2]["ticket"] == "CHG-4242" and len(trail[2]["args_digest"]) == 64


@pytest.mark.usefixtures("no_grants")
async def test_write_grant_allows_rebuild_and_revoke_stops_it_at_once(
    prod: Deployment, mcp_client: ClientFor
) -> None:
    # The admin API refuses a production rebuild without a write grant, whoever calls it.
    async with prod.admin() as a:
        r = await a.post("/requests", json={"kind": "rebuild"})
        assert r.status_code == 403 and "write scope" in r.json()["error"]["message"]
        wrong_key = await a.get("/deployment", headers={"Authorization": "Bearer nope"})
        assert wrong_key.status_code == 401 and wrong_key.json()["error"]["code"] == "unauthorized"

    await grant(prod, "CHG-W", "write")
    async with mcp_client(prod) as c:
        rebuilt = await c.call_tool("rebuild", {})
        assert not rebuilt.is_error, text_of(rebuilt)
        assert rebuilt.structured_content and rebuilt.structured_content["status"] == "done"

        async with prod.admin() as a:
            assert (await a.delete("/grants")).json() == {"revoked": 1}
        after = await c.call_tool("topics", {})
        assert after.is_error and "revoked" in text_of(after)
    trail = await audit_trail(prod)
    assert (trail[0]["tool"], trail[0]["outcome"]) == ("topics", "refused: no live grant")
    assert (trail[1]["tool"], trail[1]["ticket"], trail[1]["outcome"]) == ("rebuild", "CHG-W", "ok")


@pytest.mark.slow
@pytest.mark.usefixtures("no_grants")
async def test_gate_cli_end_to_end(prod: Deployment, mcp_client: ClientFor, tmp_path: Path) -> None:
    """The seed's script path approves, records the grant, `oa mcp audit` shows the calls, --revoke ends it."""
    code, out, err = await oa(prod, tmp_path, str(GATE_SH), "--scope", "write", extra=GATE_ENV)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "MCP production access gate: APPROVED (temporary)"
    assert lines[1] == "Change ticket: CHG-4242" and lines[2] == "Reason: check projector lag"
    assert lines[3].startswith("Requested at: ") and lines[3].endswith("Z")
    assert lines[4].startswith("Expires at: ") and lines[4].endswith("Z")
    requested = datetime.fromisoformat(lines[3].split(": ", 1)[1].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(lines[4].split(": ", 1)[1].replace("Z", "+00:00"))
    assert 299 <= (expires - requested).total_seconds() <= 301
    async with mcp_client(prod) as c:
        assert not (await c.call_tool("errors", {})).is_error
        code, out, _ = await oa(prod, tmp_path, "audit")
        assert code == 0 and "CHG-4242" in out and "errors" in out
        code, out, _ = await oa(prod, tmp_path, "gate", "--revoke")
        assert code == 0 and "revoked: 1" in out
        assert (await c.call_tool("errors", {})).is_error
