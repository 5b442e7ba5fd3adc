"""Policy decisions for tool calls and spend, as pure functions.

`evaluate` answers allow or deny with a reason code from the versioned catalog in
`proto/oa/runtime/v1/policy.proto` (`ReasonCode`), given the authorization's state as it
stands under its row lock. Its decision id is a hash of the *inputs* (run, tool call, tool,
amount, authorization, catalog version), so the same question always has the same id: the
runtime records the first answer and replays it for every repeat, which is what makes a
tool call's decision idempotent and a run's replay show one decision per tool call.

Checks run in a fixed order and the first failing one is the reason:
revoked, expired, deny mode, tool not allowed, then for amounts > 0: interactive approval
(mode `interactive`, or above the threshold of `delegated_budget_with_threshold`), per-call
limit, daily limit, total budget. Amounts are integer sats throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from oa._proto.oa.runtime.v1 import policy_pb2
from oa.canonical import canonical_json, sha256_hex

CATALOG_VERSION = "1.1"
POLICY_BUNDLE_ID = f"oa.runtime.policy/v1@catalog-{CATALOG_VERSION}"
MODES = ("interactive", "delegated_budget", "delegated_budget_with_threshold", "deny")
# The reason codes the catalog holds, short names (`budget_exhausted`) to proto enum names.
REASON_CODES: dict[str, str] = {
    name.removeprefix("REASON_CODE_").lower(): name
    for name in policy_pb2.ReasonCode.keys()  # noqa: SIM118 - an enum wrapper, not a dict
    if name != "REASON_CODE_UNSPECIFIED"
}


@dataclass(frozen=True)
class DecisionInputs:
    run_id: str
    tool_call_id: str
    tool: str
    amount_sats: int
    authorization_id: str | None

    def decision_id(self) -> str:
        """`dec_` + sha256 of the canonical inputs and the catalog version."""
        material = canonical_json(
            {
                "amount_sats": self.amount_sats,
                "authorization_id": self.authorization_id,
                "catalog_version": CATALOG_VERSION,
                "run_id": self.run_id,
                "tool": self.tool,
                "tool_call_id": self.tool_call_id,
            }
        )
        return "dec_" + sha256_hex(material)[:40]


@dataclass(frozen=True)
class Authorization:
    """An authorization's limits and standing, as locked in the deciding transaction."""

    authorization_id: str
    owner: str
    mode: str
    max_total_sats: int
    max_per_call_sats: int | None
    max_per_day_sats: int | None
    threshold_sats: int | None
    allowed_tools: tuple[str, ...] | None
    spent_sats: int
    reserved_sats: int
    day: date
    day_used_sats: int
    expires_at: datetime | None
    revoked: bool

    def on(self, today: date) -> Authorization:
        """The same authorization with its daily counter rolled over to `today`."""
        return self if self.day == today else replace(self, day=today, day_used_sats=0)

    def budget(self, requested: int) -> dict[str, Any]:
        """The `BudgetSnapshot` message as JSON (proto field names, integer sats)."""
        snap: dict[str, Any] = {
            "authorization_id": self.authorization_id,
            "max_total_sats": self.max_total_sats,
            "spent_sats": self.spent_sats,
            "reserved_sats": self.reserved_sats,
            "requested_sats": requested,
        }
        if self.max_per_call_sats is not None:
            snap["max_per_call_sats"] = self.max_per_call_sats
        if self.max_per_day_sats is not None:
            snap["max_per_day_sats"] = self.max_per_day_sats
        return snap


@dataclass(frozen=True)
class Decision:
    decision_id: str
    allow: bool
    reason: str  # a key of REASON_CODES
    message: str
    budget: dict[str, Any] | None

    @property
    def reason_code(self) -> str:
        return REASON_CODES[self.reason]


def _deny(inputs: DecisionInputs, reason: str, message: str, auth: Authorization | None) -> Decision:
    budget = auth.budget(inputs.amount_sats) if auth is not None else None
    return Decision(inputs.decision_id(), False, reason, message, budget)


def evaluate(inputs: DecisionInputs, auth: Authorization | None, run_active: bool, now: datetime) -> Decision:
    """Allow or deny `inputs` against `auth` (already rolled over to today)."""
    if not run_active:
        return _deny(inputs, "run_not_active", "the run is being canceled; it may start no tool calls", auth)
    if auth is None:
        return Decision(inputs.decision_id(), True, "policy_allowed", "no spend: allowed by policy", None)
    a, amount = auth, inputs.amount_sats
    if a.revoked:
        return _deny(inputs, "authorization_revoked", f"authorization {a.authorization_id} was revoked", a)
    if a.expires_at is not None and a.expires_at <= now:
        return _deny(inputs, "authorization_expired", f"authorization {a.authorization_id} has expired", a)
    if a.mode == "deny":
        return _deny(inputs, "authorization_deny_mode", "the authorization's mode is deny", a)
    if a.allowed_tools is not None and inputs.tool not in a.allowed_tools:
        return _deny(
            inputs, "tool_not_allowed", f"tool {inputs.tool!r} is not in the authorization's allowed tools", a
        )
    if amount > 0:
        if a.mode == "interactive":
            return _deny(
                inputs, "interactive_approval_required", "interactive mode: a person approves each spend", a
            )
        if (
            a.mode == "delegated_budget_with_threshold"
            and a.threshold_sats is not None
            and amount > a.threshold_sats
        ):
            return _deny(
                inputs,
                "interactive_approval_required",
                f"{amount} sats is above the delegated threshold of {a.threshold_sats}; a person must approve",
                a,
            )
        if a.max_per_call_sats is not None and amount > a.max_per_call_sats:
            return _deny(
                inputs,
                "per_call_limit_exceeded",
                f"{amount} sats is above the per-call limit of {a.max_per_call_sats}",
                a,
            )
        if a.max_per_day_sats is not None and a.day_used_sats + amount > a.max_per_day_sats:
            return _deny(
                inputs,
                "daily_limit_exceeded",
                f"{a.day_used_sats} used today + {amount} would pass the daily limit of {a.max_per_day_sats}",
                a,
            )
        if a.spent_sats + a.reserved_sats + amount > a.max_total_sats:
            return _deny(
                inputs,
                "budget_exhausted",
                f"spent {a.spent_sats} + reserved {a.reserved_sats} + {amount} would pass the "
                f"budget of {a.max_total_sats} sats",
                a,
            )
    return Decision(
        inputs.decision_id(), True, "policy_allowed", "allowed within the authorization", a.budget(amount)
    )


def after_reserve(auth: Authorization, amount: int) -> Authorization:
    """The authorization once an allowed reservation of `amount` holds its sats."""
    return replace(auth, reserved_sats=auth.reserved_sats + amount, day_used_sats=auth.day_used_sats + amount)


def decision_events(
    decision: Decision, inputs: DecisionInputs, reservation_id: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """The run events that record `decision`: `policy.decision`, and on exhaustion
    `policy.budget_exhausted` too. Payloads use the proto field names."""
    payload: dict[str, Any] = {
        "decision_id": decision.decision_id,
        "decision": "allow" if decision.allow else "deny",
        "reason_code": decision.reason_code,
        "tool_call_id": inputs.tool_call_id,
        "tool": inputs.tool,
        "policy_bundle_id": POLICY_BUNDLE_ID,
        "catalog_version": CATALOG_VERSION,
        "message": decision.message,
        "amount_sats": inputs.amount_sats,
    }
    if decision.budget is not None:
        payload["budget"] = decision.budget
    if inputs.authorization_id is not None:
        payload["authorization_id"] = inputs.authorization_id
    if reservation_id is not None:
        payload["reservation_id"] = reservation_id
    events = [("policy.decision", payload)]
    if decision.reason == "budget_exhausted":
        events.append(
            ("policy.budget_exhausted", {"decision_id": decision.decision_id, "budget": decision.budget})
        )
    return events
