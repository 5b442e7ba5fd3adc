"""The production-access gate, as pure functions: environment in, Approved or Denied out.

Off by default. Every field is required and checked; the first problem found is the
answer. Approval is only a request: the grant takes effect when the deployment records it
(with its own clock for the expiry), and every MCP call on production re-checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

ENABLED = "OA_KHALA_MCP_PROD_ACCESS_ENABLED"
TICKET = "OA_CHANGE_TICKET"
REASON = "OA_MCP_PROD_ACCESS_REASON"
ACK = "OA_MCP_PROD_ACKNOWLEDGE_RISK"
TTL = "OA_MCP_PROD_ACCESS_TTL_MINUTES"
TTL_MIN, TTL_MAX = 1, 60


@dataclass(frozen=True)
class Denied:
    why: str

    @property
    def message(self) -> str:
        return f"MCP production access denied: {self.why}"


@dataclass(frozen=True)
class Approved:
    ticket: str
    reason: str
    ttl_minutes: int
    requested_at: datetime

    @property
    def expires_at(self) -> datetime:
        return self.requested_at + timedelta(minutes=self.ttl_minutes)


def utc_iso(t: datetime) -> str:
    return t.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def evaluate(env: Mapping[str, str], now: datetime) -> Approved | Denied:
    enabled = env.get(ENABLED, "").strip()
    if not enabled:
        return Denied(
            f"{ENABLED} is not set; the default posture is disabled (set {ENABLED}=1 to request access)"
        )
    if enabled != "1":
        return Denied(f"{ENABLED} must be 1, got {enabled!r}; the default posture is disabled")
    ticket = env.get(TICKET, "").strip()
    if not ticket:
        return Denied(f"{TICKET} is required: the change ticket that authorizes this access")
    reason = env.get(REASON, "").strip()
    if not reason:
        return Denied(f"{REASON} is required: why production access is needed")
    ack = env.get(ACK, "").strip()
    if ack != "YES":
        return Denied(
            f"{ACK} must be YES"
            + (f", got {ack!r}" if ack else " (it is not set)")
            + " to acknowledge that this touches production"
        )
    raw = env.get(TTL, "").strip()
    if not raw:
        return Denied(f"{TTL} is required: an integer number of minutes, {TTL_MIN}-{TTL_MAX}")
    try:
        ttl = int(raw)
    except ValueError:
        return Denied(f"{TTL} must be an integer number of minutes ({TTL_MIN}-{TTL_MAX}), got {raw!r}")
    if not TTL_MIN <= ttl <= TTL_MAX:
        return Denied(f"{TTL} must be between {TTL_MIN} and {TTL_MAX} minutes, got {ttl}")
    return Approved(ticket, reason, ttl, now)


def approval_lines(ticket: str, reason: str, requested_at: datetime, expires_at: datetime) -> list[str]:
    return [
        "MCP production access gate: APPROVED (temporary)",
        f"Change ticket: {ticket}",
        f"Reason: {reason}",
        f"Requested at: {utc_iso(requested_at)}",
        f"Expires at: {utc_iso(expires_at)}",
    ]
