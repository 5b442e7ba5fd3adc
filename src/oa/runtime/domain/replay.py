"""Replay artifacts: the run receipt and `REPLAY.jsonl`, written and verified without I/O.

`REPLAY.jsonl` is one canonical JSON object per line: a header, `session.start`, one line
per event (with its payload, payload hash, previous hash and hash), `session.end` (counts,
last hash, trajectory hash). Every line starts with `"_line_hash"`, the sha256 of the
previous line's hash and this line's canonical JSON *without* that key (the key sorts
first, so the rest of the line is exactly that JSON and no re-encoding is needed). So any
changed byte, removed line or reordering is caught *at the line where it happened*, and
the verifier can name the first bad line. On event lines it also recomputes the payload
hash (over the payload's bytes as they stand in the line), the event hash chain
`sha256(run_id|seq|event_type|payload_hash|prev_hash or "root")` and the gap-free seq;
`session.end` must agree with what it recomputed.

`trajectory_hash` = sha256 over every event hash followed by a newline, in seq order:
each event hash already commits to its canonical payload and to everything before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

FORMAT = "oa.replay.v1"
HASH_RULE = "sha256(run_id|seq|event_type|sha256(canonical_json(payload))|prev_hash or 'root')"
_PREFIX = b'{"_line_hash":"'
_HASH_END = len(_PREFIX) + 64
_OPTS = orjson.OPT_SORT_KEYS
_PAYLOAD_KEY = b',"payload":'  # 11 bytes
_PAYLOAD_HASH_KEY = b',"payload_hash":"'


@dataclass(frozen=True)
class ReplayEvent:
    """What replay needs of one stored run event."""

    seq: int
    event_type: str
    payload_json: bytes
    payload_hash: str
    prev_hash: str | None
    hash: str
    recorded_at: str


class Trajectory:
    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, event_hash_hex: str) -> None:  # per event: keep it lean
        self._h.update(event_hash_hex.encode() + b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


@dataclass
class ReceiptBuilder:
    """Fold a run's events, in seq order, into its receipt."""

    run_id: str
    count: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    last_hash: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    tool_calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    bundles: set[str] = field(default_factory=set)
    decisions: dict[str, int] = field(default_factory=lambda: {"allow": 0, "deny": 0})
    trajectory: Trajectory = field(default_factory=Trajectory)

    def _call(self, tool_call_id: str) -> dict[str, Any]:
        return self.tool_calls.setdefault(
            tool_call_id, {"tool_call_id": tool_call_id, "tool": None, "decisions": [], "result": None}
        )

    def add(self, ev: ReplayEvent) -> None:
        self.count += 1
        if self.first_seq is None:
            self.first_seq = ev.seq
        self.last_seq, self.last_hash = ev.seq, ev.hash
        self.counts[ev.event_type] = self.counts.get(ev.event_type, 0) + 1
        self.trajectory.add(ev.hash)
        t = ev.event_type
        if t not in ("tool.call", "tool.result", "policy.decision"):
            return
        p = orjson.loads(ev.payload_json)
        tc = p.get("tool_call_id")
        if not isinstance(tc, str) or not tc:
            return
        call = self._call(tc)
        if t == "tool.call":
            call["tool"] = p.get("tool") or call["tool"]
            call["called_at_seq"] = ev.seq
        elif t == "tool.result":
            call["result"] = "ok" if p.get("ok") else "error"
        else:
            call["tool"] = call["tool"] or p.get("tool")
            verdict = p.get("decision", "")
            if verdict in self.decisions:
                self.decisions[verdict] += 1
            if p.get("policy_bundle_id"):
                self.bundles.add(p["policy_bundle_id"])
            call["decisions"].append(
                {
                    "seq": ev.seq,
                    "decision_id": p.get("decision_id"),
                    "decision": verdict,
                    "reason_code": p.get("reason_code"),
                    "message": p.get("message"),
                }
            )

    def receipt(self, owner: str, status: str, current_bundle: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "run_id": self.run_id,
            "owner": owner,
            "status": status,
            "event_count": self.count,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "trajectory_hash": self.trajectory.hexdigest(),
            "counts_by_type": dict(sorted(self.counts.items())),
            "tool_calls": sorted(self.tool_calls.values(), key=lambda c: str(c["tool_call_id"])),
            "decisions": self.decisions,
            "policy_bundle_ids": sorted(self.bundles),
            "policy_bundle_id": current_bundle,
            "hash_rule": HASH_RULE,
        }


class ReplayWriter:
    """Renders REPLAY.jsonl line by line (each line ends with a newline)."""

    def __init__(self) -> None:
        self._prev = ""

    def line(self, obj: dict[str, Any]) -> bytes:
        body = orjson.dumps(obj, option=_OPTS)
        h = hashlib.sha256(self._prev.encode() + body).hexdigest()
        self._prev = h
        return _PREFIX + h.encode() + b'",' + body[1:] + b"\n"

    def header(self, run_id: str, owner: str, status: str, last_seq: int, bundle: str) -> bytes:
        return self.line(
            {
                "type": "header",
                "format": FORMAT,
                "run_id": run_id,
                "owner": owner,
                "status": status,
                "last_seq": last_seq,
                "policy_bundle_id": bundle,
                "hash_rule": HASH_RULE,
            }
        )

    def session_start(self, run_id: str, started_at: str | None) -> bytes:
        return self.line({"type": "session.start", "run_id": run_id, "started_at": started_at})

    def event(self, ev: ReplayEvent) -> bytes:
        return self.line(
            {
                "type": "event",
                "seq": ev.seq,
                "event_type": ev.event_type,
                "payload": orjson.Fragment(ev.payload_json),
                "payload_hash": ev.payload_hash,
                "prev_hash": ev.prev_hash,
                "hash": ev.hash,
                "recorded_at": ev.recorded_at,
            }
        )

    def session_end(self, receipt: dict[str, Any]) -> bytes:
        return self.line(
            {
                "type": "session.end",
                "run_id": receipt["run_id"],
                "event_count": receipt["event_count"],
                "first_seq": receipt["first_seq"],
                "last_seq": receipt["last_seq"],
                "last_hash": receipt["last_hash"],
                "trajectory_hash": receipt["trajectory_hash"],
                "counts_by_type": receipt["counts_by_type"],
            }
        )


@dataclass
class Verdict:
    ok: bool
    lines: int
    events: int
    run_id: str | None = None
    trajectory_hash: str | None = None
    last_hash: str | None = None
    bad_line: int | None = None
    reason: str | None = None


class _Bad(Exception):
    pass


def verify_lines(lines: Iterable[bytes]) -> Verdict:
    """Check a REPLAY.jsonl; the verdict names the first bad line (1-based) and why."""
    prev_line = b""
    sha256 = hashlib.sha256
    loads = orjson.loads
    run_id: str | None = None
    header: dict[str, Any] | None = None
    stage = "header"
    seq = 0
    prev_hash: str | None = None
    count = 0
    counts: dict[str, int] = {}
    trajectory = Trajectory()
    n = 0
    try:
        for n, raw in enumerate(lines, 1):  # noqa: B007 - n names the bad line
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if not line.startswith(_PREFIX) or line[_HASH_END : _HASH_END + 2] != b'",':
                raise _Bad(
                    'the line does not start with {"_line_hash":"<64 hex>", (edited or not a replay file)'
                )
            claimed = line[15:_HASH_END]
            if sha256(prev_line + b"{" + line[_HASH_END + 2 :]).hexdigest().encode() != claimed:
                raise _Bad("line hash mismatch: this line (or the order of lines) was changed")
            prev_line = claimed
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                raise _Bad(f"not JSON ({exc})") from None
            kind = obj.get("type")
            if stage == "event" and kind == "event":
                s, et, p_hash, h = obj["seq"], obj["event_type"], obj["payload_hash"], obj["hash"]
                if s != seq + 1:
                    raise _Bad(f"seq {s} follows seq {seq}: events are missing or out of order")
                start = line.find(_PAYLOAD_KEY)
                end = line.rfind(_PAYLOAD_HASH_KEY)
                if start < 0 or end < start:
                    raise _Bad("event line has no payload")
                if sha256(line[start + 11 : end]).hexdigest() != p_hash:
                    raise _Bad(f"payload hash mismatch at seq {s}: the payload was changed")
                if obj["prev_hash"] != prev_hash:
                    raise _Bad(f"prev_hash at seq {s} does not match the previous event's hash")
                assert run_id is not None
                # oa.canonical.event_hash, inlined: this loop is the verifier's hot path.
                if sha256(f"{run_id}|{s}|{et}|{p_hash}|{prev_hash or 'root'}".encode()).hexdigest() != h:
                    raise _Bad(f"event hash mismatch at seq {s}: {HASH_RULE} does not give {h[:12]}...")
                seq, prev_hash = s, h
                count += 1
                counts[et] = counts.get(et, 0) + 1
                trajectory.add(h)
                continue
            if stage == "header":
                if kind != "header" or obj.get("format") != FORMAT:
                    raise _Bad(f"line 1 must be the header with format {FORMAT}")
                header, run_id, stage = obj, obj["run_id"], "session.start"
            elif stage == "session.start":
                if kind != "session.start" or obj.get("run_id") != run_id:
                    raise _Bad("line 2 must be session.start for the header's run")
                stage = "event"
            elif stage == "event" and kind == "session.end":
                computed = {
                    "run_id": run_id,
                    "event_count": count,
                    "first_seq": 1 if count else None,
                    "last_seq": seq,
                    "last_hash": prev_hash,
                    "trajectory_hash": trajectory.hexdigest(),
                    "counts_by_type": dict(sorted(counts.items())),
                }
                for key, value in computed.items():
                    if obj.get(key) != value:
                        raise _Bad(f"session.end says {key}={obj.get(key)!r}, the events give {value!r}")
                assert header is not None
                if header.get("last_seq") != seq:
                    raise _Bad(
                        f"the header promised last_seq {header.get('last_seq')}, the file ends at {seq}"
                    )
                stage = "end"
            elif stage == "end":
                raise _Bad("a line follows session.end")
            else:
                raise _Bad(f"unexpected {kind!r} line while expecting {stage}")
        if stage != "end":
            n += 1
            raise _Bad(
                f"the file ends before {'session.end' if stage == 'event' else stage}: it was cut short"
            )
    except _Bad as bad:
        return Verdict(False, n, count, run_id, bad_line=n, reason=str(bad))
    except (KeyError, TypeError, AttributeError) as exc:
        return Verdict(
            False, n, count, run_id, bad_line=n, reason=f"malformed line ({type(exc).__name__}: {exc})"
        )
    return Verdict(True, n, count, run_id, trajectory.hexdigest(), prev_hash)
