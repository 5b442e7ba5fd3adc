"""Payload validation against proto/: the event-type map comes from the proto option, and a
payload is refused unless it is spelled the one way the projector and hashes expect."""

from __future__ import annotations

from typing import Any

import pytest

from oa.exceptions import InvalidRequest
from oa.runtime.domain.schemas import known_event_types, payload_messages, validate_payload

CONTRACT_TYPES = {
    "run.started",
    "run.delta",
    "text.delta",
    "tool.call",
    "tool.result",
    "tool.progress",
    "run.cancel_requested",
    "run.finished",
    "run.executor_lost",
    "policy.decision",
    "policy.budget_exhausted",
}


def test_every_contract_type_has_a_proto_message() -> None:
    assert set(known_event_types()) >= CONTRACT_TYPES
    assert payload_messages()["tool.call"].DESCRIPTOR.full_name == "oa.runtime.v1.ToolCall"


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("run.started", {}),
        ("run.started", {"model": "m", "metadata": {"any": ["thing", 1, None, {"x": True}]}}),
        ("text.delta", {"text": "hé", "channel": None}),
        ("tool.call", {"tool_call_id": "t1", "tool": "sh", "arguments": {"cmd": "ls"}}),
        ("tool.result", {"tool_call_id": "t1", "ok": False, "output": [1, "two"], "error": "x"}),
        ("tool.progress", {"fraction": 1}),
        ("tool.progress", {"fraction": 0.25}),
        ("run.finished", {"status": "failed", "usage": {"tokens": 3}}),
        ("run.executor_lost", {"last_heartbeat_age_ms": 120_000}),
        (
            "policy.decision",
            {
                "decision_id": "d1",
                "decision": "deny",
                "reason_code": "REASON_CODE_BUDGET_EXHAUSTED",
                "budget": {"max_total_sats": 1000, "spent_sats": 990, "requested_sats": 20},
            },
        ),
    ],
)
def test_valid_payloads_pass(event_type: str, payload: dict[str, Any]) -> None:
    validate_payload(event_type, payload)


@pytest.mark.parametrize(
    ("event_type", "payload", "field"),
    [
        ("text.delta", {"txt": "typo"}, "payload.txt"),
        ("text.delta", {"text": 5}, "payload"),
        ("tool.result", {"ok": "true"}, "payload"),
        # proto JSON aliases would store a second spelling of the same field
        ("tool.call", {"toolCallId": "t1"}, "payload.toolCallId"),
        ("policy.decision", {"budget": {"maxTotalSats": 5}}, "payload.budget.maxTotalSats"),
        # numbers must be JSON numbers of the right kind, not strings
        ("policy.decision", {"budget": {"max_total_sats": "5"}}, "payload.budget.max_total_sats"),
        ("policy.decision", {"budget": {"max_total_sats": 2.0}}, "payload.budget.max_total_sats"),
        ("policy.decision", {"budget": {"max_total_sats": 1.5}}, "payload.budget.max_total_sats"),
        ("policy.decision", {"budget": {"max_total_sats": True}}, "payload.budget.max_total_sats"),
        ("policy.decision", {"budget": {"max_total_sats": 2**64}}, "payload"),
        ("tool.progress", {"fraction": "NaN"}, "payload.fraction"),
        ("run.executor_lost", {"last_heartbeat_age_ms": "12"}, "payload.last_heartbeat_age_ms"),
        ("policy.decision", {"reason_code": "REASON_CODE_NOPE"}, "payload"),
        ("policy.decision", {"budget": "full"}, "payload"),
    ],
)
def test_invalid_payloads_are_refused(event_type: str, payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_payload(event_type, payload)
    assert err.value.status == 400
    assert err.value.details["field"] == field
    assert event_type in err.value.message


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_payload("run.exploded", {})
    assert err.value.details["known_event_types"] == known_event_types()


@pytest.mark.parametrize("payload", [[], "x", None, 3])
def test_payload_must_be_an_object(payload: Any) -> None:
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        validate_payload("text.delta", payload)
