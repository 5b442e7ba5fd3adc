"""The gate's every refusal and its approval; deployment selection's every rule (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from oa.agent import gate
from oa.agent.selection import Anonymous, SelectionError, SelfHosted, env_files, load_env, select

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
GOOD = {
    gate.ENABLED: "1",
    gate.TICKET: "CHG-123",
    gate.REASON: "inspect lag",
    gate.ACK: "YES",
    gate.TTL: "15",
}


def denied(env: dict[str, str]) -> str:
    verdict = gate.evaluate(env, NOW)
    assert isinstance(verdict, gate.Denied)
    assert verdict.message.startswith("MCP production access denied: ")
    return verdict.why


def test_gate_disabled_by_default_says_so() -> None:
    why = denied({})
    assert gate.ENABLED in why and "default posture is disabled" in why
    assert "default posture is disabled" in denied({**GOOD, gate.ENABLED: "true"})


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (gate.TICKET, "", gate.TICKET),
        (gate.TICKET, "   ", gate.TICKET),
        (gate.REASON, "", gate.REASON),
        (gate.ACK, "", "not set"),
        (gate.ACK, "yes", "'yes'"),
        (gate.TTL, "", "1-60"),
        (gate.TTL, "ten", "'ten'"),
        (gate.TTL, "1.5", "integer"),
        (gate.TTL, "0", "between 1 and 60"),
        (gate.TTL, "61", "between 1 and 60"),
        (gate.TTL, "-5", "between 1 and 60"),
    ],
)
def test_gate_refuses_each_missing_or_invalid_field(field: str, value: str, expected: str) -> None:
    env = {k: v for k, v in GOOD.items() if not (k == field and value == "")}
    if value:
        env[field] = value
    why = denied(env)
    assert field in why and expected in why and "default posture" not in why


@pytest.mark.parametrize("ttl", ["1", "60"])
def test_gate_approves_complete_requests(ttl: str) -> None:
    verdict = gate.evaluate({**GOOD, gate.TTL: ttl}, NOW)
    assert isinstance(verdict, gate.Approved)
    assert (verdict.expires_at - verdict.requested_at).total_seconds() == int(ttl) * 60
    lines = gate.approval_lines(verdict.ticket, verdict.reason, verdict.requested_at, verdict.expires_at)
    assert lines[0] == "MCP production access gate: APPROVED (temporary)"
    assert lines[1:4] == [
        "Change ticket: CHG-123",
        "Reason: inspect lag",
        "Requested at: 2026-05-01T12:00:00Z",
    ]
    assert lines[4].startswith("Expires at: 2026-05-01T1") and lines[4].endswith("Z")


BOTH = {"KHALA_SELF_HOSTED_URL": "http://k:1/", "KHALA_SELF_HOSTED_ADMIN_KEY": "sekrit"}


def test_both_select_a_deployment() -> None:
    sel = select({**BOTH, "OA_RUNTIME_URL": "http://r:2", "OA_HOME": "/h"})
    assert sel == SelfHosted("http://k:1", "sekrit", "http://r:2", None, "/h")


def test_neither_means_the_anonymous_local_deployment() -> None:
    sel = select({})
    assert isinstance(sel, Anonymous) and "anonymous" in sel.warnings[0]


@pytest.mark.parametrize("only", ["KHALA_SELF_HOSTED_URL", "KHALA_SELF_HOSTED_ADMIN_KEY"])
def test_one_without_the_other_is_refused_naming_both(only: str) -> None:
    with pytest.raises(SelectionError) as info:
        select({only: BOTH[only]})
    assert "KHALA_SELF_HOSTED_URL" in str(info.value) and "KHALA_SELF_HOSTED_ADMIN_KEY" in str(info.value)


@pytest.mark.parametrize("other", ["KHALA_DEPLOYMENT", "CONVEX_DEPLOYMENT", "KHALA_URL"])
def test_mixing_with_another_selector_is_refused(other: str) -> None:
    with pytest.raises(SelectionError, match=other):
        select({**BOTH, other: "prod:acme"})
    with pytest.raises(SelectionError, match=other):
        select({"KHALA_SELF_HOSTED_URL": "http://k", other: "x"})


def test_anonymous_mode_ignores_production_selectors_with_a_warning() -> None:
    sel = select({**BOTH, "KHALA_DEPLOYMENT": "prod:acme", "KHALA_AGENT_MODE": "anonymous"})
    assert isinstance(sel, Anonymous)
    assert "ignoring" in sel.warnings[0] and "KHALA_SELF_HOSTED_URL" in sel.warnings[0]
    with pytest.raises(SelectionError, match="KHALA_AGENT_MODE"):
        select({"KHALA_AGENT_MODE": "prod"})


def test_env_files_local_overrides_dotenv_and_process_env_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "KHALA_SELF_HOSTED_URL=http://from-env\nKHALA_SELF_HOSTED_ADMIN_KEY='k1'\n"
    )
    (tmp_path / ".env.local").write_text("# local\nexport KHALA_SELF_HOSTED_URL=http://from-local\n")
    env = load_env(env_files(tmp_path, None), {})
    assert env["KHALA_SELF_HOSTED_URL"] == "http://from-local" and env["KHALA_SELF_HOSTED_ADMIN_KEY"] == "k1"
    explicit = tmp_path / "prod.env"
    explicit.write_text("KHALA_SELF_HOSTED_URL=http://explicit\n")
    env = load_env(env_files(tmp_path, explicit), {"KHALA_AGENT_MODE": "anonymous"})
    assert env == {"KHALA_SELF_HOSTED_URL": "http://explicit", "KHALA_AGENT_MODE": "anonymous"}
    with pytest.raises(SelectionError, match="does not exist"):
        env_files(tmp_path, tmp_path / "missing.env")
