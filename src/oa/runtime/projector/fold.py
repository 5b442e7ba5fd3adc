"""Folding a batch of journal events into document changes (pure; no I/O).

Each projection folds only the events past its own checkpoint. A projection that raises
is stopped at the event that broke it (its changes from this batch are discarded and its
checkpoint stays before that event); the others go on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from oa.canonical import canonical_json, sha256_hex
from oa.khala.store.writer import DocChange
from oa.runtime.domain.journal import Event
from oa.runtime.projector.projections import Doc, Projection, decode


@dataclass
class Failure:
    projection: str
    position: int
    message: str


@dataclass
class FoldResult:
    changes: list[DocChange] = field(default_factory=list)
    checkpoints: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def doc_change(p: Projection, key: str, doc: Doc | None, version: int) -> DocChange:
    if doc is None:
        return DocChange(p.topic, key, version, p.version, None, None, None, None)
    data = canonical_json(doc).decode("utf-8")
    owner = doc.get("owner")
    org = doc.get("org_id")
    return DocChange(
        p.topic,
        key,
        version,
        p.version,
        data,
        sha256_hex(data.encode("utf-8")),
        owner if isinstance(owner, str) else None,
        org if isinstance(org, str) else None,
    )


def keys_for(projections: Sequence[Projection], events: Sequence[Event]) -> set[str]:
    return {k for ev in events for p in projections for k in p.keys(ev)}


def fold_batch(
    projections: Sequence[Projection],
    events: Sequence[Event],
    checkpoints: Mapping[str, int],
    current: Mapping[str, tuple[Doc, int]],
) -> FoldResult:
    """`current` maps doc_key -> (document, doc_version) as stored before the batch."""
    out = FoldResult()
    payloads = [decode(ev) for ev in events]
    for p in projections:
        start = checkpoints.get(p.name, 0)
        docs: dict[str, tuple[Doc | None, int]] = {}
        last = start
        try:
            for ev, payload in zip(events, payloads, strict=True):
                if ev.position <= start:
                    continue
                for key in p.keys(ev):
                    doc, _ = docs[key] if key in docs else current.get(key, (None, 0))
                    docs[key] = (p.fold(doc, ev, payload), ev.seq)
                last = ev.position
        except Exception as exc:
            out.failures.append(
                Failure(
                    p.name,
                    ev.position,
                    f"{type(exc).__name__}: {exc} at {ev.kind}:{ev.stream_id}#{ev.seq} ({ev.event_type})",
                )
            )
            continue
        for key, (doc, version) in docs.items():
            before = current.get(key)
            if doc is None and before is None:
                continue
            if before is not None and doc is not None and canonical_json(doc) == canonical_json(before[0]):
                continue
            out.changes.append(doc_change(p, key, doc, version))
        if last != start:
            out.checkpoints[p.name] = last
    return out
