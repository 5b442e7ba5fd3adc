"""Per-call access control for MCP tools: the deployment says what it is, grants say what is allowed.

Every call asks the deployment for its class (never a label from the agent). On `prod`,
every call also needs a live grant (not expired, not revoked, checked by the deployment's
clock), writes need one with write scope, and every call, allowed or refused, is appended
to the deployment's audit trail with the grant's ticket and a digest of the arguments.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from oa.agent.clients import AdminClient

HOW_TO_GET_ACCESS = (
    "A human with change-control approval runs `oa mcp gate` (or deploy/khala/mcp-production-access-gate.sh) "
    "with OA_KHALA_MCP_PROD_ACCESS_ENABLED=1, OA_CHANGE_TICKET, OA_MCP_PROD_ACCESS_REASON, "
    "OA_MCP_PROD_ACKNOWLEDGE_RISK=YES and OA_MCP_PROD_ACCESS_TTL_MINUTES (1-60){scope}. "
    "For development, use the anonymous local deployment instead: KHALA_AGENT_MODE=anonymous."
)


@dataclass(frozen=True)
class Access:
    deployment_class: str
    grant: dict[str, Any] | None

    @property
    def audited(self) -> bool:
        return self.deployment_class == "prod"


class Refused(Exception):
    def __init__(self, access: Access, short: str, message: str) -> None:
        super().__init__(message)
        self.access, self.short = access, short


def digest(args: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(args, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def authorize(admin: AdminClient, tool: str, write: bool) -> Access:
    dep = await admin.deployment()
    cls = str(dep.get("class"))
    if cls == "dev":
        return Access("dev", None)
    if cls != "prod":  # an unknown class is treated as production: fail closed
        cls = "prod"
    live = [g for g in await admin.live_grants() if g.get("live")]
    writable = [g for g in live if g.get("scope") == "write"]
    chosen: dict[str, Any] | None = (writable or live or [None])[0]  # type: ignore[list-item]
    access = Access(cls, chosen)
    if not live:
        raise Refused(
            access,
            "refused: no live grant",
            f"`{tool}` refused: this deployment is production and has no live production-access grant "
            "(none was recorded, or it expired or was revoked). " + HOW_TO_GET_ACCESS.format(scope=""),
        )
    if write and not writable:
        raise Refused(
            access,
            "refused: grant is read-only",
            f"`{tool}` changes the deployment, and the live grant (ticket {chosen['ticket'] if chosen else '?'}) "
            "has read scope only. " + HOW_TO_GET_ACCESS.format(scope=" with --scope write"),
        )
    return access


async def record(admin: AdminClient, access: Access, tool: str, args: dict[str, Any], outcome: str) -> None:
    g = access.grant or {}
    await admin.call(
        "POST",
        "/mcp-audit",
        json={
            "grant_id": g.get("id"),
            "ticket": g.get("ticket"),
            "tool": tool,
            "args_digest": digest(args),
            "outcome": outcome[:2000],
        },
    )
