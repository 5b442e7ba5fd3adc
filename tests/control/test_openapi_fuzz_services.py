"""Fuzz control's and Khala's live servers from their own OpenAPI documents: no input,
valid or schema-breaking, gets a 5xx (the runtime has its fuller suite in
tests/integration/test_openapi_fuzz.py). They share the runtime's HTTP layer (oa.http),
so this is where a drift of theirs from it shows.

Khala runs without a projector here, and operations that would make one act (a rebuild or
prune request, revoking every grant) are fuzzed with invalid data only: a later test's
projector must not inherit queued work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from oa.bootstrap import services
from tests.control.conftest import SERVICE_TOKEN
from tests.khala.sync_fixtures import khala_settings, mint
from tests.support.servers import serve_in_loop

pytestmark = pytest.mark.slow

EXAMPLES = 25
ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"
POSITIVE_ONLY_WHEN_SAFE = {("POST", "/admin/v1/requests"), ("DELETE", "/admin/v1/grants")}


@pytest.fixture(scope="module")
async def khala_url(database_url: str) -> AsyncIterator[str]:
    app = services.khala_app(khala_settings(database_url, admin_key=ADMIN_KEY))
    async with serve_in_loop(app) as url:
        yield url


def fuzz_all(base_url: str, headers: dict[str, str]) -> dict[str, int]:
    """Every operation, both modes; returns requests sent per operation and mode."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    doc = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    sent: dict[str, int] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), f"the document has an operation schemathesis cannot read: {result}"
            op = result.ok()
            spec = doc["paths"][op.path][op.method.lower()]
            modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
            if (op.method.upper(), op.path) in POSITIVE_ONLY_WHEN_SAFE:
                modes.remove(GenerationMode.POSITIVE)
            if not (spec.get("parameters") or spec.get("requestBody")):
                modes.remove(GenerationMode.NEGATIVE)  # nothing to break
            for mode in modes:
                sent[f"{op.method.upper()} {op.path} {mode}"] = fuzz_one(op, mode, base_url, session, headers)
    return sent


def fuzz_one(
    op: Any, mode: GenerationMode, base_url: str, session: requests.Session, headers: dict[str, str]
) -> int:
    sent = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def one(case: schemathesis.Case[Any]) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(
            base_url=base_url, session=session, headers=headers, checks=[not_a_server_error], timeout=5
        )

    one()
    return sent


@pytest.mark.parametrize("who", ["admin key", "sync token"])
async def test_khala_never_answers_5xx(khala_url: str, who: str) -> None:
    token = ADMIN_KEY if who == "admin key" else mint("fuzz", ttl=900)
    sent = await asyncio.to_thread(fuzz_all, khala_url, {"Authorization": f"Bearer {token}"})
    assert any("/snapshot" in n for n in sent) and any("/admin/v1/" in n for n in sent)
    assert all(n > 0 for n in sent.values()), sent


async def test_control_never_answers_5xx(control_url: str) -> None:
    sent = await asyncio.to_thread(fuzz_all, control_url, {"Authorization": f"Bearer {SERVICE_TOKEN}"})
    assert any("/api/sync/revocations" in n for n in sent)
    assert all(n > 0 for n in sent.values()), sent
