"""Receipts and REPLAY.jsonl from a real run, and the `oa replay` commands end to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
from typer.testing import CliRunner

from oa.cli.main import app as cli
from oa.runtime.domain.policy import POLICY_BUNDLE_ID
from oa.runtime.domain.replay import verify_lines
from tests.conftest import SECRET

Signer = Callable[[str], dict[str, str]]


async def make_run(client: httpx.AsyncClient, run_id: str) -> None:
    url = f"/internal/v1/runs/{run_id}/events"
    assert (await client.post(url, json={"event_type": "run.started"})).status_code == 201
    for tc, tool in (("tc1", "search"), ("tc2", "shell")):
        await client.post(
            url, json={"event_type": "tool.call", "payload": {"tool_call_id": tc, "tool": tool}}
        )
    auth = f"auth-{run_id}"
    body = {
        "authorization_id": auth,
        "mode": "delegated_budget",
        "max_total_sats": 100,
        "allowed_tools": ["search"],
    }
    assert (await client.post("/internal/v1/spend/authorizations", json=body)).status_code == 201
    for tc, tool in (("tc1", "search"), ("tc2", "shell")):
        r = await client.post(
            "/internal/v1/policy/evaluate",
            json={"run_id": run_id, "tool_call_id": tc, "tool": tool, "authorization_id": auth},
        )
        assert r.status_code == 201, r.text
    await client.post(url, json={"event_type": "tool.result", "payload": {"tool_call_id": "tc1", "ok": True}})
    await client.post(url, json={"event_type": "run.finished", "payload": {"status": "succeeded"}})


async def test_receipt_and_replay_agree(client: httpx.AsyncClient, run_id: str) -> None:
    await make_run(client, run_id)
    receipt = (await client.get(f"/internal/v1/runs/{run_id}/receipt")).json()
    assert receipt["event_count"] == 7 and (receipt["first_seq"], receipt["last_seq"]) == (1, 7)
    assert (
        receipt["counts_by_type"]["policy.decision"] == 2 and receipt["policy_bundle_id"] == POLICY_BUNDLE_ID
    )
    calls = {c["tool_call_id"]: c for c in receipt["tool_calls"]}
    assert calls["tc1"]["decisions"][0]["decision"] == "allow" and calls["tc1"]["result"] == "ok"
    assert calls["tc2"]["decisions"][0]["reason_code"] == "REASON_CODE_TOOL_NOT_ALLOWED"
    resp = await client.get(f"/internal/v1/runs/{run_id}/replay")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/x-ndjson")
    lines = resp.content.splitlines(keepends=True)
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds == ["header", "session.start", *["event"] * 7, "session.end"]
    v = verify_lines(lines)
    assert v.ok and v.trajectory_hash == receipt["trajectory_hash"] and v.last_hash == receipt["last_hash"]
    # Deterministic: the same finished run exports the same bytes.
    assert (await client.get(f"/internal/v1/runs/{run_id}/replay")).content == resp.content


async def test_replay_of_others_and_missing_runs(
    client: httpx.AsyncClient, runtime_url: str, sign: Signer, run_id: str
) -> None:
    await make_run(client, run_id)
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign("user:mallory")) as other:
        assert (await other.get(f"/internal/v1/runs/{run_id}/receipt")).status_code == 403
        assert (await other.get(f"/internal/v1/runs/{run_id}/replay")).status_code == 403
    missing = await client.get("/internal/v1/runs/no-such-run/replay")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_cli_export_and_verify(
    client: httpx.AsyncClient, runtime_url: str, run_id: str, tmp_path: Path
) -> None:
    await make_run(client, run_id)
    env = {
        "OA_RUNTIME_URL": runtime_url,
        "OA_RUNTIME_CALLER_SECRET": SECRET.decode(),
        "OA_HOME": str(tmp_path),
    }
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, list(args), env=env)
        return result.exit_code, result.output

    out = tmp_path / "export"
    code, text = await asyncio.to_thread(
        invoke, "replay", "export", run_id, "--out", str(out), "--user", "alice"
    )
    assert code == 0, text
    replay, receipt = out / "REPLAY.jsonl", out / "receipt.json"
    code, text = await asyncio.to_thread(invoke, "replay", "verify", str(replay), "--receipt", str(receipt))
    assert code == 0 and "OK" in text, text

    lines = replay.read_bytes().splitlines(keepends=True)
    target = 5  # an event line
    lines[target - 1] = lines[target - 1].replace(b'"tool_call_id":"tc', b'"tool_call_id":"tX', 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    code, text = await asyncio.to_thread(invoke, "replay", "verify", str(bad))
    assert code == 1 and f"line {target}" in text, text
