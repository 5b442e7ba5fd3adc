"""Runtime, control and Khala share one HTTP plumbing (oa.http): the same malformed request
gets the same answer from each, always the error envelope, never FastAPI's 422."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import Signer
from tests.control.conftest import SERVICE_TOKEN, NewUser
from tests.khala.sync_fixtures import mint, running_khala


@pytest.fixture
async def services(
    database_url: str, runtime_url: str, control_url: str, sign: Signer
) -> AsyncIterator[dict[str, tuple[str, str, dict[str, str]]]]:
    """service -> (base URL, a GET path with an integer `limit`, headers that authorize it)."""
    async with running_khala(database_url) as khala:
        yield {
            "runtime": (runtime_url, "/internal/v1/runs/run-plumbing/events", sign("user:alice")),
            "control": (control_url, "/api/sync/revocations", {"Authorization": f"Bearer {SERVICE_TOKEN}"}),
            "khala": (
                khala.url,
                "/sync/v1/topics/runtime.run_summaries/snapshot",
                {"Authorization": f"Bearer {mint('alice')}"},
            ),
        }


def envelope(r: httpx.Response) -> dict[str, object]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert r.headers["content-type"] == "application/json"
    err: dict[str, object] = body["error"]
    return err


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("limit=abc", "invalid request: query parameter limit should be a valid integer"),
        ("limit=0", "invalid request: query parameter limit should be greater than or equal to 1"),
        ("limit=5&limit=6", "query parameter 'limit' is given more than once; give it once"),
        ("limt=5", "unknown query parameter 'limt'"),
    ],
)
async def test_every_service_refuses_a_bad_query_parameter_alike(
    services: dict[str, tuple[str, str, dict[str, str]]], query: str, says: str
) -> None:
    for name, (base, path, headers) in services.items():
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            r = await http.get(f"{path}?{query}")
        assert r.status_code == 400, f"{name}: {r.status_code} {r.text}"
        err = envelope(r)
        assert err["code"] == "invalid_request" and str(err["message"]).startswith(says), f"{name}: {err}"


async def test_every_service_answers_unknown_paths_and_methods_with_the_envelope(
    services: dict[str, tuple[str, str, dict[str, str]]],
) -> None:
    for name, (base, _, headers) in services.items():
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            missing = await http.get("/no/such/path")
            assert missing.status_code == 404 and envelope(missing)["code"] == "not_found", name
            health = await http.get("/healthz?verbose=1")
            assert health.status_code == 400 and envelope(health)["code"] == "invalid_request", name


async def test_every_openapi_document_promises_the_envelope_not_422(
    services: dict[str, tuple[str, str, dict[str, str]]],
) -> None:
    for name, (base, _, _) in services.items():
        async with httpx.AsyncClient(base_url=base) as http:
            r = await http.get("/openapi.json")
        assert r.status_code == 200, name
        doc = r.json()
        assert '`{"error": {"code", "message", "details"}}`' in doc["info"]["description"], name
        codes = {code for op in doc["paths"].values() for o in op.values() for code in o.get("responses", {})}
        assert "422" not in codes, f"{name} documents FastAPI's 422"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/auth/sign-in", {"email": "a\u0000bc@example.com", "password": "x"}),
        ("POST", "/api/sync/sessions/revoke", {"jti": "\u0000"}),
        ("POST", "/api/sync/sessions/revoke", {"session_id": "s\u0000"}),
        ("GET", "/api/sync/revocations?since=99999999999999999999999", None),
    ],
)
async def test_control_refuses_what_postgres_cannot_hold_not_a_500(
    control: httpx.AsyncClient, new_user: NewUser, method: str, path: str, body: object
) -> None:
    headers = (
        (await new_user())["headers"] if "revoke" in path else {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    )
    r = await control.request(method, path, json=body, headers=headers)
    assert r.status_code == 400, f"{method} {path}: {r.status_code} {r.text}"
    assert envelope(r)["code"] == "invalid_request"
