"""Khala's HTTP reads and operator endpoints over a real socket (issue 10, "smaller leaks")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.khala.sync_fixtures import Khala, mint, running_khala

RUNS = "runtime.run_summaries"
ADMIN_KEY = "khala-test-admin-key-0123456789"
OPERATOR_PATHS = ("/sync/v1/status", "/sync/v1/lag", "/metrics")


@pytest.fixture
async def khala(database_url: str) -> AsyncIterator[Khala]:
    async with running_khala(database_url, admin_key=ADMIN_KEY) as k:
        yield k


@pytest.fixture
async def http(khala: Khala) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=khala.url, timeout=10) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def history_path(doc_key: str) -> str:
    return f"/sync/v1/topics/{RUNS}/documents/{doc_key}/history"


async def test_history_of_someone_elses_document_answers_as_one_that_never_existed(
    http: httpx.AsyncClient, client: httpx.AsyncClient, run_id: str
) -> None:
    r = await client.post(
        f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {}}
    )
    assert r.status_code == 201, r.text
    key = f"runtime/run_summary:{run_id}"
    async with asyncio.timeout(10):  # the projector writes it
        while not (await http.get(history_path(key), headers=bearer(mint("alice")))).json()["changes"]:
            await asyncio.sleep(0.1)
    never = f"runtime/run_summary:{run_id}-never"
    foreign = await http.get(history_path(key), headers=bearer(mint("mallory")))
    missing = await http.get(history_path(never), headers=bearer(mint("mallory")))
    assert (foreign.status_code, missing.status_code) == (200, 200), foreign.text
    assert foreign.json() == {"topic": RUNS, "doc_key": key, "changes": []}
    assert missing.json() == {"topic": RUNS, "doc_key": never, "changes": []}


@pytest.mark.parametrize("path", OPERATOR_PATHS)
async def test_operator_endpoints_need_the_admin_key(http: httpx.AsyncClient, path: str) -> None:
    for headers in ({}, bearer(mint("alice")), bearer("wrong-admin-key")):
        r = await http.get(path, headers=headers)
        assert r.status_code == 401, f"{path} with {headers}: {r.status_code} {r.text[:200]}"
        assert r.json()["error"]["code"] == "unauthorized"
        assert "KHALA_SELF_HOSTED_ADMIN_KEY" in r.json()["error"]["message"] or "admin key" in r.text
    ok = await http.get(path, headers=bearer(ADMIN_KEY))
    assert ok.status_code == 200, ok.text
    if path == "/sync/v1/status":
        assert set(ok.json()) >= {"topics", "sessions"}
    if path == "/sync/v1/lag":
        assert set(ok.json()) >= {"projections", "errors"}


async def test_operator_endpoints_refuse_everyone_without_an_admin_key(database_url: str) -> None:
    async with running_khala(database_url) as k, httpx.AsyncClient(base_url=k.url) as http:
        for path in OPERATOR_PATHS:
            r = await http.get(path, headers=bearer(ADMIN_KEY))
            assert r.status_code == 401 and "has no admin key" in r.json()["error"]["message"], path


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("limit=abc", "query parameter limit"),
        ("limit=0", "query parameter limit"),
        ("limit=10&limit=20", "'limit' is given more than once"),
        ("limt=10", "unknown query parameter 'limt'"),
    ],
)
async def test_bad_query_parameters_get_the_envelope(http: httpx.AsyncClient, query: str, says: str) -> None:
    token = bearer(mint("alice"))
    for path in (f"/sync/v1/topics/{RUNS}/snapshot", history_path("runtime/run_summary:x")):
        r = await http.get(f"{path}?{query}", headers=token)
        assert r.status_code == 400, f"{path}?{query}: {r.status_code} {r.text}"
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["code"] == "invalid_request" and says in body["error"]["message"], body
    admin = await http.get(f"/admin/v1/documents?topic={RUNS}&{query}", headers=bearer(ADMIN_KEY))
    assert admin.status_code == 400 and admin.json()["error"]["code"] == "invalid_request", admin.text


async def test_snapshot_refusals_use_the_envelope(http: httpx.AsyncClient) -> None:
    cases = [
        ({}, 401, "unauthorized"),
        (bearer("garbage"), 401, "unauthorized"),
        (bearer(mint("alice", ttl=-120)), 401, "token_expired"),
        (bearer(mint("alice", scopes=("runtime.notifications",))), 403, "forbidden_topic"),
    ]
    for headers, status, code in cases:
        r = await http.get(f"/sync/v1/topics/{RUNS}/snapshot", headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    r = await http.get("/sync/v1/topics/nope/snapshot", headers=bearer(mint("alice")))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/sync/v1/topics/{RUNS}/documents/a%00b/history", None),
        ("GET", f"/admin/v1/documents?topic={RUNS}&prefix=%00", None),
        ("GET", f"/admin/v1/documents?topic={RUNS}&cursor=a%00", None),
        ("GET", "/admin/v1/documents/a%00b", None),
        ("GET", "/admin/v1/mcp-audit?cursor=99999999999999999999999", None),
        ("GET", "/admin/v1/requests/99999999999999999999", None),
        ("DELETE", "/admin/v1/grants/99999999999999999999", None),
        ("POST", "/admin/v1/mcp-audit", {"tool": "a\u0000", "args_digest": "x", "outcome": "y"}),
        ("POST", "/admin/v1/mcp-audit", {"tool": "t", "args_digest": "x", "outcome": "y", "grant_id": 2**70}),
        ("POST", "/admin/v1/requests", {"kind": "prune", "topic": RUNS, "retention_s": 2**70}),
        # No such grant: the foreign key refused it inside the database (found by schemathesis).
        (
            "POST",
            "/admin/v1/mcp-audit",
            {"tool": "t", "args_digest": "x", "outcome": "y", "grant_id": 987654},
        ),
        ("POST", "/admin/v1/requests", {"kind": "audit", "grant_id": 987654}),
    ],
)
async def test_values_postgres_cannot_hold_are_refused_not_a_500(
    http: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    token = mint("alice") if path.startswith("/sync/") else ADMIN_KEY
    r = await http.request(method, path, json=body, headers=bearer(token))
    assert r.status_code == 400, f"{method} {path}: {r.status_code} {r.text}"
    assert r.json()["error"]["code"] == "invalid_request"
