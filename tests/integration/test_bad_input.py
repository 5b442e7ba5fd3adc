"""Bad input to the runs API: a clear error envelope, a message that says what to fix, and
nothing written. Over a real socket, checked against the database itself."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest

from oa.runtime.signing import AUDIENCE, HEADER, ISSUER, sign_caller
from oa.store.database import Database
from tests.conftest import SECRET

Signer = Callable[[str], dict[str, str]]
MAX_BODY = 64 * 1024  # the test server's max_body_bytes


async def footprint(db: Database, run_id: str) -> tuple[Any, ...]:
    """Everything a request could have written for `run_id`."""
    head = await db.fetchrow(
        "SELECT status, last_seq, last_hash, updated_at FROM runtime.runs WHERE run_id = $1", run_id
    )
    events = await db.fetchval(
        "SELECT count(*) FROM runtime.events WHERE stream_kind = 'run' AND stream_id = $1", run_id
    )
    frames = await db.fetchval("SELECT count(*) FROM runtime.run_frames WHERE run_id = $1", run_id)
    return (tuple(head) if head else None, events, frames)


def assert_error(r: httpx.Response, status: int, code: str, *mentions: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    err: dict[str, Any] = body["error"]
    assert err["code"] == code, err
    for word in mentions:
        assert word.lower() in err["message"].lower(), (word, err["message"])
    return err


@pytest.fixture
async def started(client: httpx.AsyncClient, run_id: str) -> AsyncIterator[str]:
    """A run owned by user:alice, running, with one event."""
    r = await client.post(f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started"})
    assert r.status_code == 201
    yield run_id


JSON = {"Content-Type": "application/json"}

# (id, raw body, headers, words the message must contain)
BAD_BODIES: list[tuple[str, bytes, dict[str, str], tuple[str, ...]]] = [
    ("not-json", b'{"event_type": "text.delta", ', JSON, ("not valid JSON",)),
    ("empty-body", b"", JSON, ("JSON object body",)),
    ("json-array", b'[{"event_type": "text.delta"}]', JSON, ("must be a JSON object", "array")),
    ("json-string", b'"text.delta"', JSON, ("must be a JSON object", "string")),
    ("event-type-number", b'{"event_type": 5}', JSON, ("event_type", "string")),
    (
        "expected-seq-string",
        b'{"event_type": "text.delta", "expected_previous_seq": "5"}',
        JSON,
        ("expected_previous_seq", "integer"),
    ),
    (
        "expected-seq-negative",
        b'{"event_type": "text.delta", "expected_previous_seq": -1}',
        JSON,
        ("expected_previous_seq",),
    ),
    ("unknown-top-level-field", b'{"event_type": "text.delta", "bogus": 1}', JSON, ("bogus", "remove it")),
    ("missing-event-type", b'{"payload": {}}', JSON, ("event_type", "required")),
    ("unknown-event-type", b'{"event_type": "made.up"}', JSON, ("unknown event_type", "made.up")),
    ("event-type-bad-shape", b'{"event_type": "Run Started"}', JSON, ("event_type",)),
    ("payload-not-object", b'{"event_type": "text.delta", "payload": [1]}', JSON, ("payload", "JSON object")),
    (
        "payload-unknown-field",
        b'{"event_type": "text.delta", "payload": {"bogus": 1}}',
        JSON,
        ("bogus", "TextDelta"),
    ),
    ("payload-wrong-type", b'{"event_type": "text.delta", "payload": {"text": 5}}', JSON, ("text", "string")),
    ("payload-nan", b'{"event_type": "run.delta", "payload": {"delta": {"x": NaN}}}', JSON, ("NaN",)),
    (
        "payload-infinity",
        b'{"event_type": "run.delta", "payload": {"delta": {"x": -Infinity}}}',
        JSON,
        ("Infinity",),
    ),
    (
        "payload-overflowing-float",
        b'{"event_type": "run.delta", "payload": {"delta": {"x": 1e999}}}',
        JSON,
        ("infinity",),
    ),
    (
        "payload-int-beyond-64-bits",
        b'{"event_type": "run.delta", "payload": {"delta": {"x": 123456789012345678901234567890}}}',
        JSON,
        ("64 bits",),
    ),
    (
        "payload-negative-int-beyond-64-bits",
        b'{"event_type": "run.delta", "payload": {"delta": {"x": -9223372036854775809}}}',
        JSON,
        ("64 bits",),
    ),
    ("lone-surrogate", b'{"event_type": "text.delta", "payload": {"text": "\\ud800"}}', JSON, ("surrogate",)),
    ("invalid-utf8", b'{"event_type": "text.delta", "payload": {"text": "\xff"}}', JSON, ("not valid JSON",)),
    (
        "nul-in-idempotency-key",
        b'{"event_type": "text.delta", "idempotency_key": "a\\u0000b"}',
        JSON,
        ("idempotency_key", "NUL"),
    ),
    (
        "run-finished-without-status",
        b'{"event_type": "run.finished", "payload": {}}',
        JSON,
        ("payload.status", "succeeded"),
    ),
    ("no-content-type", b'{"event_type": "text.delta"}', {}, ("Content-Type: application/json",)),
    (
        "text-plain",
        b'{"event_type": "text.delta"}',
        {"Content-Type": "text/plain"},
        ("Content-Type: application/json", "text/plain"),
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "mentions"), [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_event_body_on_new_run(
    client: httpx.AsyncClient,
    db: Database,
    run_id: str,
    body: bytes,
    headers: dict[str, str],
    mentions: tuple[str, ...],
) -> None:
    r = await client.post(f"/internal/v1/runs/{run_id}/events", content=body, headers=headers)
    assert_error(r, 400, "invalid_request", *mentions)
    assert await footprint(db, run_id) == (None, 0, 0), "a refused request created the run"


@pytest.mark.parametrize(
    ("body", "headers", "mentions"), [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_event_body_on_existing_run(
    client: httpx.AsyncClient,
    db: Database,
    started: str,
    body: bytes,
    headers: dict[str, str],
    mentions: tuple[str, ...],
) -> None:
    before = await footprint(db, started)
    r = await client.post(f"/internal/v1/runs/{started}/events", content=body, headers=headers)
    assert_error(r, 400, "invalid_request", *mentions)
    assert await footprint(db, started) == before


async def test_big_ints_within_64_bits_are_kept_exactly(client: httpx.AsyncClient, run_id: str) -> None:
    """The other side of the 64-bit rule: values at the edges round-trip digit for digit."""
    body = b'{"event_type": "run.delta", "payload": {"delta": {"a": 18446744073709551615, "b": -9223372036854775808}}}'
    r = await client.post(f"/internal/v1/runs/{run_id}/events", content=body, headers=JSON)
    assert r.status_code == 201, r.text
    assert r.json()["event"]["payload"] == {"delta": {"a": 2**64 - 1, "b": -(2**63)}}


BAD_FRAMES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("missing-frame-id", {"thread_id": "t", "type": "user_message"}, ("frame_id", "required")),
    ("frame-id-number", {"thread_id": "t", "frame_id": 7, "type": "m"}, ("frame_id", "string")),
    (
        "unknown-field",
        {"thread_id": "t", "frame_id": "f", "type": "m", "principal": "user:bob"},
        ("principal",),
    ),
    ("nul-in-thread-id", {"thread_id": "t\x00", "frame_id": "f", "type": "m"}, ("thread_id", "NUL")),
    (
        "payload-int-beyond-64-bits",
        {"thread_id": "t", "frame_id": "f", "type": "m", "payload": {"n": 2**70}},
        ("64 bits",),
    ),
]


@pytest.mark.parametrize(("body", "mentions"), [c[1:] for c in BAD_FRAMES], ids=[c[0] for c in BAD_FRAMES])
async def test_bad_frame(
    client: httpx.AsyncClient, db: Database, started: str, body: dict[str, Any], mentions: tuple[str, ...]
) -> None:
    before = await footprint(db, started)
    r = await client.post(f"/internal/v1/runs/{started}/frames", json=body)
    assert_error(r, 400, "invalid_request", *mentions)
    assert await footprint(db, started) == before


async def test_bad_cancel_body(client: httpx.AsyncClient, db: Database, started: str) -> None:
    before = await footprint(db, started)
    r = await client.post(f"/internal/v1/runs/{started}/cancel", json={"reason": 3})
    assert_error(r, 400, "invalid_request", "reason", "string")
    r = await client.post(f"/internal/v1/runs/{started}/cancel", json={"why": "x"})
    assert_error(r, 400, "invalid_request", "why")
    assert await footprint(db, started) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_limit(
    client: httpx.AsyncClient, db: Database, run_id: str, chunked: bool
) -> None:
    text = "x" * (MAX_BODY + 10)
    raw = b'{"event_type": "text.delta", "payload": {"text": "%s"}}' % text.encode()

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(raw), 8192):
            yield raw[i : i + 8192]

    content: Any = pieces() if chunked else raw
    r = await client.post(f"/internal/v1/runs/{run_id}/events", content=content, headers=JSON)
    if chunked:
        assert "content-length" not in {k.lower() for k in r.request.headers}
    err = assert_error(r, 413, "invalid_request", str(MAX_BODY), "OA_MAX_BODY_BYTES")
    assert err["details"]["max_bytes"] == MAX_BODY
    assert await footprint(db, run_id) == (None, 0, 0)
    # The same server still takes a body just under the limit.
    ok = await client.post(
        f"/internal/v1/runs/{run_id}/events",
        json={"event_type": "text.delta", "payload": {"text": "x" * (MAX_BODY - 200)}},
    )
    assert ok.status_code == 201, ok.text


async def test_batch_over_the_limit_writes_nothing(
    client: httpx.AsyncClient, db: Database, started: str
) -> None:
    before = await footprint(db, started)
    events = [{"event_type": "text.delta", "payload": {"text": "y" * 1000}} for _ in range(80)]
    r = await client.post(f"/internal/v1/runs/{started}/events/batch", json={"events": events})
    assert_error(r, 413, "invalid_request", "split the batch")
    assert await footprint(db, started) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "snapshot"),
        ("GET", "events"),
        ("GET", "stream"),
        ("POST", "cancel"),
    ],
)
async def test_unknown_run(
    client: httpx.AsyncClient, db: Database, run_id: str, method: str, path: str
) -> None:
    r = await client.request(method, f"/internal/v1/runs/{run_id}/{path}")
    err = assert_error(r, 404, "not_found", run_id)
    assert err["details"]["run_id"] == run_id
    assert await footprint(db, run_id) == (None, 0, 0), "cancel on an unknown run must not create it"


async def test_unknown_endpoint_and_bad_run_id(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/internal/v1/nothing"), 404, "not_found", "no such endpoint")
    r = await client.get("/internal/v1/runs/bad%20id!/snapshot")
    assert_error(r, 400, "invalid_request", "run_id")


def _forged(principal: str) -> str:
    return sign_caller(b"some-other-secret-0123456789abcdef", principal, 300)


def _alg_none(principal: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": principal, "iat": now, "nbf": now, "exp": now + 300}
    return jwt.encode(claims, key="", algorithm="none")  # PyJWT maps "" to no key for alg none


def _too_long_lived(principal: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": principal, "iat": now, "exp": now + 86400}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _wrong_audience(principal: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "khala", "sub": principal, "iat": now, "exp": now + 60}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _expired(principal: str) -> str:
    return sign_caller(SECRET, principal, 60, now=time.time() - 3600)


# (id, makes the header value (None: no header), words the message must contain, details.reason).
# Tokens are minted when the test runs, not at collection: a long suite would expire them.
BAD_SIGNATURES: list[tuple[str, Callable[[str], str | None], tuple[str, ...], str | None]] = [
    ("missing", lambda _p: None, ("missing", HEADER, "oa token runtime"), None),
    ("empty", lambda _p: "", ("missing", HEADER), None),
    ("forged", _forged, ("not a valid caller signature",), "invalid"),
    ("expired", _expired, ("expired", "mint a fresh one"), "expired"),
    ("alg-none", _alg_none, ("not a valid caller signature",), "invalid"),
    ("malformed", lambda _p: "not-a-jwt", ("not a valid caller signature",), "invalid"),
    ("too-long-lived", _too_long_lived, ("short-lived",), "ttl"),
    ("wrong-audience", _wrong_audience, ("audience",), "invalid"),
]


@pytest.mark.parametrize(
    ("make_token", "mentions", "reason"), [c[1:] for c in BAD_SIGNATURES], ids=[c[0] for c in BAD_SIGNATURES]
)
async def test_bad_signature(
    runtime_url: str,
    db: Database,
    started: str,
    make_token: Callable[[str], str | None],
    mentions: tuple[str, ...],
    reason: str | None,
) -> None:
    before = await footprint(db, started)
    token = make_token("user:alice")
    headers = {} if token is None else {HEADER: token}
    async with httpx.AsyncClient(base_url=runtime_url, headers=headers) as anon:
        for r in (
            await anon.post(f"/internal/v1/runs/{started}/events", json={"event_type": "text.delta"}),
            await anon.post(f"/internal/v1/runs/{started}/cancel"),
            await anon.get(f"/internal/v1/runs/{started}/snapshot"),
        ):
            err = assert_error(r, 401, "unauthorized", *mentions)
            if reason is not None:
                assert err["details"]["reason"] == reason
            assert started not in err["message"], "a 401 must not reveal whether the run exists"
    assert await footprint(db, started) == before


async def test_body_cannot_claim_a_principal(client: httpx.AsyncClient, run_id: str) -> None:
    r = await client.post(
        f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "principal": "user:bob"}
    )
    assert_error(r, 400, "invalid_request", "principal", "remove it")


async def test_another_principals_run(runtime_url: str, sign: Signer, db: Database, started: str) -> None:
    before = await footprint(db, started)
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign("user:mallory")) as other:
        calls = [
            other.post(f"/internal/v1/runs/{started}/events", json={"event_type": "text.delta"}),
            other.post(
                f"/internal/v1/runs/{started}/events/batch", json={"events": [{"event_type": "text.delta"}]}
            ),
            other.post(
                f"/internal/v1/runs/{started}/frames", json={"thread_id": "t", "frame_id": "f", "type": "m"}
            ),
            other.post(f"/internal/v1/runs/{started}/cancel"),
            other.get(f"/internal/v1/runs/{started}/snapshot"),
            other.get(f"/internal/v1/runs/{started}/events"),
            other.get(f"/internal/v1/runs/{started}/stream"),
        ]
        for call in calls:
            err = assert_error(
                await call, 403, "forbidden", "another principal", "sign the request as its owner"
            )
            assert err["details"]["run_id"] == started
    assert await footprint(db, started) == before


async def test_invalid_transitions(client: httpx.AsyncClient, db: Database, started: str) -> None:
    url = f"/internal/v1/runs/{started}/events"
    r = await client.post(url, json={"event_type": "run.finished", "payload": {"status": "succeeded"}})
    assert r.status_code == 201
    before = await footprint(db, started)
    for body, mentions in [
        ({"event_type": "run.started"}, ("invalid transition", "run.started", "succeeded")),
        ({"event_type": "text.delta", "payload": {"text": "late"}}, ("invalid transition", "finished")),
        ({"event_type": "run.finished", "payload": {"status": "failed"}}, ("late result cannot reopen",)),
    ]:
        err = assert_error(await client.post(url, json=body), 409, "conflict", *mentions)
        assert err["details"]["status"] == "succeeded"
    frame = {"thread_id": "t", "frame_id": "late", "type": "m"}
    assert_error(
        await client.post(f"/internal/v1/runs/{started}/frames", json=frame),
        409,
        "conflict",
        "no more frames",
    )
    assert await footprint(db, started) == before


async def test_canceling_run_cannot_succeed(client: httpx.AsyncClient, db: Database, started: str) -> None:
    assert (await client.post(f"/internal/v1/runs/{started}/cancel")).status_code == 202
    before = await footprint(db, started)
    r = await client.post(
        f"/internal/v1/runs/{started}/events",
        json={"event_type": "run.finished", "payload": {"status": "succeeded"}},
    )
    err = assert_error(r, 409, "conflict", "canceling run may only finish as failed or canceled")
    assert err["details"]["target_status"] == "succeeded"
    assert await footprint(db, started) == before


async def test_expected_previous_seq_mismatch_writes_nothing(
    client: httpx.AsyncClient, db: Database, started: str
) -> None:
    before = await footprint(db, started)
    r = await client.post(
        f"/internal/v1/runs/{started}/events", json={"event_type": "text.delta", "expected_previous_seq": 7}
    )
    err = assert_error(r, 409, "conflict", "re-read the stream")
    assert err["details"] == {"expected_previous_seq": 7, "last_seq": 1}
    assert await footprint(db, started) == before


@pytest.mark.parametrize(
    ("bad", "status", "code", "mentions"),
    [
        ({"event_type": "text.delta", "payload": {"bogus": 1}}, 400, "invalid_request", ("event 2", "bogus")),
        # Event 2 finishes the run, so event 3 (otherwise fine) is the invalid transition.
        (
            {"event_type": "run.finished", "payload": {"status": "succeeded"}},
            409,
            "conflict",
            ("event 3", "invalid transition"),
        ),
        (
            {"event_type": "text.delta", "expected_previous_seq": 0},
            409,
            "conflict",
            ("event 2", "expected_previous_seq"),
        ),
        (
            {"event_type": "run.delta", "payload": {"delta": {"n": 2**70}}},
            400,
            "invalid_request",
            ("64 bits",),
        ),
        ({"event_type": 1}, 400, "invalid_request", ("events.2.event_type",)),
    ],
    ids=["payload", "transition", "seq", "big-int", "type"],
)
async def test_batch_with_one_bad_event_writes_none(
    client: httpx.AsyncClient,
    db: Database,
    started: str,
    bad: dict[str, Any],
    status: int,
    code: str,
    mentions: tuple[str, ...],
) -> None:
    """Event 2 of 4 is bad (or makes event 3 bad); the fine ones must not be written either."""
    before = await footprint(db, started)
    fine = {"event_type": "text.delta", "payload": {"text": "ok"}}
    r = await client.post(
        f"/internal/v1/runs/{started}/events/batch", json={"events": [fine, fine, bad, fine]}
    )
    assert_error(r, status, code, *mentions)
    assert await footprint(db, started) == before


async def test_empty_and_oversized_batches(client: httpx.AsyncClient, db: Database, started: str) -> None:
    before = await footprint(db, started)
    r = await client.post(f"/internal/v1/runs/{started}/events/batch", json={"events": []})
    assert_error(r, 400, "invalid_request", "events")
    many = {"events": [{"event_type": "text.delta"}] * 1001}
    r = await client.post(f"/internal/v1/runs/{started}/events/batch", json=many)
    assert_error(r, 400, "invalid_request", "events", "1000")
    assert await footprint(db, started) == before


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"after_seq": "x"}, ("after_seq", "integer")),
        ({"limit": 0}, ("limit",)),
        ({"limit": 5000}, ("limit", "1000")),
    ],
)
async def test_bad_query(
    client: httpx.AsyncClient, started: str, params: dict[str, Any], mentions: tuple[str, ...]
) -> None:
    r = await client.get(f"/internal/v1/runs/{started}/events", params=params)
    assert_error(r, 400, "invalid_request", *mentions)


async def test_a_query_parameter_given_twice_is_refused(client: httpx.AsyncClient, run_id: str) -> None:
    await client.post(f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {}})
    r = await client.get(f"/internal/v1/runs/{run_id}/events?after_seq=0&after_seq=1")
    assert r.status_code == 400
    body = r.json()["error"]
    assert body["code"] == "invalid_request" and "after_seq" in body["message"] and "once" in body["message"]


async def test_a_query_parameter_without_a_name_is_refused(client: httpx.AsyncClient, run_id: str) -> None:
    await client.post(f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {}})
    r = await client.get(f"/internal/v1/runs/{run_id}/events?=null")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
