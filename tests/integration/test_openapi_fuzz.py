"""Fuzz the live runtime from its own OpenAPI document (schemathesis 4 + hypothesis).

Every operation gets schema-valid (positive) and schema-breaking (negative) requests, each
signed with a valid caller signature, against the real server on a real socket. The
checks: no 5xx, only documented status codes and content types, bodies and headers that
match the document, and negative data refused with a 4xx.

The server runs in the test session's event loop, so the blocking schemathesis client
runs in a worker thread while the loop keeps serving. The run SSE operation is pointed at
a finished run so every stream it opens terminates.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from oa.bootstrap import services
from oa.runtime.settings import RuntimeSettings

pytestmark = pytest.mark.slow

Signer = Callable[[str], dict[str, str]]
PRINCIPAL = "user:fuzz"
EXAMPLES = int(os.environ.get("OA_FUZZ_EXAMPLES", "15"))
RUN_STREAM = ("GET", "/internal/v1/runs/{run_id}/stream")
# A worker can be reattached, so its stream never ends on its own: fuzz that operation as a
# principal that owns no worker (its parameter checks run; a 200 would never terminate).
WORKER_STREAM = ("GET", "/internal/v1/codex/workers/{worker_id}/stream")

SCHEMA_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
CHECKS = {
    GenerationMode.POSITIVE: SCHEMA_CHECKS,
    GenerationMode.NEGATIVE: [*SCHEMA_CHECKS, negative_data_rejection],
}


# Negative data must be refused with one of the API's own 4xx answers. schemathesis's
# default list lacks 413 (a schema-breaking body can be larger than max_body_bytes) and
# allows codes this API never sends for bad data (405, 406, 415, 422, 428, 429, 5xx).
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 409, 410, 413]}}}
)


def _cases() -> list[Any]:
    """(operation, mode) pairs from the document (read from the app; no server needed).
    An operation that takes no input at all has no negative data to send."""
    doc = services.runtime_app("postgresql://collect-only/none", RuntimeSettings(b"x")).openapi()
    cases = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            takes_input = bool(op.get("parameters") or op.get("requestBody"))
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if mode is GenerationMode.NEGATIVE and not takes_input:
                    continue
                cases.append(pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode}"))
    return cases


@pytest.fixture(scope="module")
async def finished_run(runtime_url: str, sign: Signer) -> str:
    run_id = f"fuzz-finished-{uuid.uuid4().hex[:8]}"
    events = [{"event_type": "run.started"}, {"event_type": "text.delta", "payload": {"text": "x"}}]
    events.append({"event_type": "run.finished", "payload": {"status": "succeeded"}})
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign(PRINCIPAL)) as c:
        r = await c.post(f"/internal/v1/runs/{run_id}/events/batch", json={"events": events})
        assert r.status_code == 201, r.text
    return run_id


@pytest.fixture(scope="module")
async def schema(runtime_url: str) -> Any:
    """The document the live server serves, loaded once (in a thread: the loop serves it)."""
    url = f"{runtime_url}/openapi.json"
    return await asyncio.to_thread(schemathesis.openapi.from_url, url, config=CONFIG, timeout=10)


def fuzz(
    schema: Any,
    runtime_url: str,
    sign: Signer,
    method: str,
    path: str,
    mode: GenerationMode,
    path_parameters: dict[str, Any] | None,
    principal: str,
) -> int:
    """Run one operation's hypothesis search; return how many requests were sent."""
    operation = schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    sent = 0
    with requests.Session() as session:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )
        @given(case=strategy)
        def one(case: schemathesis.Case[Any]) -> None:
            nonlocal sent
            sent += 1
            if mode is GenerationMode.NEGATIVE and case.query:
                # `requests` sends nothing for a parameter whose value is None or [], so an
                # "extra parameter" made of one would never reach the server: send it empty.
                case.query = {k: ("" if v is None or v == [] else v) for k, v in case.query.items()}
            case.call_and_validate(
                base_url=runtime_url,
                session=session,
                headers=sign(principal),
                checks=CHECKS[mode],
                timeout=5,
            )

        one()
    return sent


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
async def test_operation_conforms(
    schema: Any,
    runtime_url: str,
    sign: Signer,
    finished_run: str,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    fixed = {"run_id": finished_run} if (method, path) == RUN_STREAM else None
    who = "user:fuzz-owns-nothing" if (method, path) == WORKER_STREAM else PRINCIPAL
    sent = await asyncio.to_thread(fuzz, schema, runtime_url, sign, method, path, mode, fixed, who)
    assert sent > 0
