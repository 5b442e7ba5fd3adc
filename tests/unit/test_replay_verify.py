"""REPLAY.jsonl: what the writer produces verifies, and one flipped byte anywhere is caught
at the line where it happened."""

from __future__ import annotations

import pytest

from oa.canonical import canonical_json, event_hash, sha256_hex
from oa.runtime.domain.replay import ReceiptBuilder, ReplayEvent, ReplayWriter, verify_lines

RUN = "run-replay-1"


def events(n: int) -> list[ReplayEvent]:
    out: list[ReplayEvent] = []
    prev: str | None = None
    payloads = [
        ("run.started", {"model": "m"}),
        ("tool.call", {"tool_call_id": "tc1", "tool": "search", "arguments": {"q": "héllo \"quoted\""}}),
        ("policy.decision", {"decision_id": "dec_1", "decision": "allow", "tool_call_id": "tc1", "tool": "search",
                             "reason_code": "REASON_CODE_POLICY_ALLOWED", "policy_bundle_id": "b1"}),
        ("tool.result", {"tool_call_id": "tc1", "ok": True, "output": [1, 2, {"payload": "x"}]}),
    ]  # fmt: skip
    for seq in range(1, n + 1):
        et, payload = payloads[(seq - 1) % len(payloads)] if seq <= 4 else ("text.delta", {"text": f"t{seq}"})
        data = canonical_json(payload)
        p_hash = sha256_hex(data)
        h = event_hash(RUN, seq, et, p_hash, prev)
        out.append(ReplayEvent(seq, et, data, p_hash, prev, h, f"2026-01-01T00:00:{seq % 60:02d}Z"))
        prev = h
    return out


def render(evs: list[ReplayEvent]) -> tuple[list[bytes], dict[str, object]]:
    w, b = ReplayWriter(), ReceiptBuilder(RUN)
    lines = [w.header(RUN, "user:alice", "running", len(evs), "bundle"), w.session_start(RUN, "t0")]
    for ev in evs:
        b.add(ev)
        lines.append(w.event(ev))
    receipt = b.receipt("user:alice", "running", "bundle")
    lines.append(w.session_end(receipt))
    return lines, receipt


def test_writer_output_verifies_and_matches_the_receipt() -> None:
    lines, receipt = render(events(10))
    v = verify_lines(lines)
    assert v.ok, v
    assert (v.events, v.lines, v.trajectory_hash) == (10, 13, receipt["trajectory_hash"])
    assert receipt["tool_calls"][0]["decisions"][0]["decision"] == "allow"  # type: ignore[index]
    assert receipt["tool_calls"][0]["result"] == "ok"  # type: ignore[index]
    assert verify_lines(render([])[0]).ok


@pytest.mark.parametrize("kind", ["header", "session.start", "event", "session.end"])
def test_one_flipped_byte_in_each_kind_of_line_is_caught_there(kind: str) -> None:
    lines, _ = render(events(6))
    index = {"header": 0, "session.start": 1, "event": 4, "session.end": len(lines) - 1}[kind]
    original = lines[index]
    for pos in range(0, len(original) - 1):  # every byte but the newline
        tampered = bytearray(original)
        tampered[pos] ^= 0x01
        v = verify_lines([*lines[:index], bytes(tampered), *lines[index + 1 :]])
        assert not v.ok and v.bad_line == index + 1, (pos, v)


def test_removed_reordered_and_cut_lines() -> None:
    lines, _ = render(events(6))
    assert verify_lines(lines[:4] + lines[5:]).bad_line == 5
    assert verify_lines([*lines[:3], lines[4], lines[3], *lines[5:]]).bad_line == 4
    cut = verify_lines(lines[:-1])
    assert not cut.ok and cut.bad_line == len(lines) and "cut short" in (cut.reason or "")
    assert verify_lines([*lines, lines[-1]]).bad_line == len(lines) + 1
