"""The runs API over a real socket against a real Postgres."""

from __future__ import annotations

import httpx

from oa.canonical import event_hash, payload_hash


async def test_first_event_creates_run_and_chains(client: httpx.AsyncClient, run_id: str) -> None:
    r1 = await client.post(
        f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {"model": "m"}}
    )
    assert r1.status_code == 201, r1.text
    e1 = r1.json()["event"]
    assert e1["seq"] == 1 and e1["prev_hash"] is None
    assert e1["payload_hash"] == payload_hash({"model": "m"})
    assert e1["hash"] == event_hash(run_id, 1, "run.started", e1["payload_hash"], None)
    r2 = await client.post(
        f"/internal/v1/runs/{run_id}/events", json={"event_type": "text.delta", "payload": {"text": "hé"}}
    )
    e2 = r2.json()["event"]
    assert e2["seq"] == 2 and e2["prev_hash"] == e1["hash"]
    assert e2["position"] > e1["position"]


async def test_idempotency_key_replays_and_conflicts(client: httpx.AsyncClient, run_id: str) -> None:
    body = {"event_type": "text.delta", "payload": {"text": "a"}, "idempotency_key": "k1"}
    first = await client.post(f"/internal/v1/runs/{run_id}/events", json=body)
    again = await client.post(f"/internal/v1/runs/{run_id}/events", json=body)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["idempotentReplay"] is True
    assert again.json()["event"]["seq"] == first.json()["event"]["seq"]
    other = await client.post(f"/internal/v1/runs/{run_id}/events", json={**body, "payload": {"text": "b"}})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "conflict"
    assert "idempotency_key" in other.json()["error"]["message"]


async def test_expected_previous_seq(client: httpx.AsyncClient, run_id: str) -> None:
    ok = await client.post(
        f"/internal/v1/runs/{run_id}/events",
        json={"event_type": "text.delta", "payload": {}, "expected_previous_seq": 0},
    )
    assert ok.status_code == 201
    bad = await client.post(
        f"/internal/v1/runs/{run_id}/events",
        json={"event_type": "text.delta", "payload": {}, "expected_previous_seq": 0},
    )
    assert bad.status_code == 409
    assert bad.json()["error"]["details"]["last_seq"] == 1


async def test_state_machine(client: httpx.AsyncClient, run_id: str) -> None:
    url = f"/internal/v1/runs/{run_id}/events"
    assert (await client.post(url, json={"event_type": "run.started"})).status_code == 201
    noop = await client.post(url, json={"event_type": "run.started"})
    assert noop.status_code == 200 and noop.json()["result"] == "noop"
    cancel = await client.post(f"/internal/v1/runs/{run_id}/cancel", json={"reason": "user"})
    assert cancel.status_code == 202 and cancel.json()["status"] == "canceling"
    again = await client.post(f"/internal/v1/runs/{run_id}/cancel")
    assert again.status_code == 200 and again.json()["result"] == "noop"
    late = await client.post(url, json={"event_type": "run.finished", "payload": {"status": "succeeded"}})
    assert late.status_code == 409, late.text
    done = await client.post(url, json={"event_type": "run.finished", "payload": {"status": "canceled"}})
    assert done.status_code == 201
    after = await client.post(url, json={"event_type": "text.delta", "payload": {"text": "x"}})
    assert after.status_code == 409
    snap = (await client.get(f"/internal/v1/runs/{run_id}/snapshot")).json()
    assert snap["status"] == "canceled" and snap["last_seq"] == 3


async def test_batch_all_or_nothing(client: httpx.AsyncClient, run_id: str) -> None:
    url = f"/internal/v1/runs/{run_id}/events/batch"
    good = {"events": [{"event_type": "text.delta", "payload": {"text": str(i)}} for i in range(5)]}
    r = await client.post(url, json=good)
    assert r.status_code == 201 and [x["event"]["seq"] for x in r.json()["results"]] == [1, 2, 3, 4, 5]
    bad = {
        "events": [
            {"event_type": "text.delta", "payload": {"text": "ok"}},
            {"event_type": "run.finished", "payload": {"status": "nope"}},
        ]
    }
    r = await client.post(url, json=bad)
    assert r.status_code == 400 and r.json()["error"]["details"]["index"] == 1
    page = (await client.get(f"/internal/v1/runs/{run_id}/events", params={"after_seq": 0})).json()
    assert page["last_seq"] == 5 and len(page["events"]) == 5


async def test_frames(client: httpx.AsyncClient, run_id: str) -> None:
    url = f"/internal/v1/runs/{run_id}/frames"
    body = {"thread_id": "t1", "frame_id": "f1", "type": "user_message", "payload": {"text": "hi"}}
    assert (await client.post(url, json=body)).status_code == 202
    again = await client.post(url, json=body)
    assert again.status_code == 200 and again.json()["idempotentReplay"] is True
    clash = await client.post(url, json={**body, "payload": {"text": "other"}})
    assert clash.status_code == 409


async def test_other_principal_is_refused(
    client: httpx.AsyncClient, runtime_url: str, sign: object, run_id: str
) -> None:
    await client.post(f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started"})
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign("user:mallory")) as other:  # type: ignore[operator]
        for r in (
            await other.get(f"/internal/v1/runs/{run_id}/snapshot"),
            await other.post(
                f"/internal/v1/runs/{run_id}/events", json={"event_type": "text.delta", "payload": {}}
            ),
        ):
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "forbidden"
