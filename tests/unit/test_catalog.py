"""The projection and topic catalog: one proto declaration, everything else derived from it."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import orjson
import pytest

from oa.canonical import sha256_hex
from oa.catalog import PROJECTIONS as DECLARED
from oa.catalog import CatalogError, projection_of_key
from oa.control.domain.scopes import SYNC_SCOPES
from oa.khala.admin.schemas import catalog
from oa.khala.topics import TOPICS, dashboard_config
from oa.runtime.domain.journal import Event
from oa.runtime.projector.fold import fold_batch
from oa.runtime.projector.projections import BY_NAME, PROJECTIONS
from oa.runtime.projector.rebuild import _owner

_position = itertools.count(1)


def event(kind: str, stream: str, seq: int, event_type: str, payload: Mapping[str, object]) -> Event:
    data = orjson.dumps(payload)
    return Event(
        kind, stream, seq, event_type, data, sha256_hex(data), None, "h", "user:alice",
        position=next(_position), recorded_at=f"2026-12-03T10:00:{seq:02d}Z",
    )  # fmt: skip


def sample_journal() -> list[Event]:
    """Every event type the folds look at, for a run and a worker."""
    run: list[tuple[str, Mapping[str, object]]] = [
        ("run.started", {"model": "m", "org_id": "acme"}),
        ("text.delta", {"text": "hi"}),
        ("tool.call", {"tool": "t"}),
        ("tool.result", {"ok": False}),
        ("policy.decision", {"decision": "allow", "budget": {"requested_sats": 5}, "decision_id": "d"}),
        ("policy.budget_exhausted", {"decision_id": "d"}),
        ("run.cancel_requested", {"reason": "r"}),
        ("run.finished", {"status": "canceled"}),
    ]
    worker: list[tuple[str, Mapping[str, object]]] = [
        ("worker.started", {"org_id": "acme", "adapter": "codex", "workspace_ref": "w"}),
        ("worker.heartbeat", {}),
        ("worker.error", {"message": "x"}),
        ("worker.stopped", {}),
    ]
    return [event("run", "r1", i, t, p) for i, (t, p) in enumerate(run, 1)] + [
        event("worker", "w1", i, t, p) for i, (t, p) in enumerate(worker, 1)
    ]


def test_control_offers_exactly_the_declared_topics() -> None:
    assert tuple(TOPICS) == SYNC_SCOPES


def test_every_declaration_has_a_fold_and_every_fold_a_declaration() -> None:
    assert {p.name for p in PROJECTIONS} == set(DECLARED)


def test_projection_keys_fall_under_their_topics_declared_prefixes() -> None:
    """The timeline used to write `runtime/run_timeline:` keys into a topic declaring only
    `runtime/run_summary:`; now a key outside its topic's declared prefixes fails here."""
    result = fold_batch(PROJECTIONS, sample_journal(), {}, {})
    assert result.changes and not result.failures
    seen = set()
    for ch in result.changes:
        owner = projection_of_key(ch.doc_key)
        assert ch.topic == owner.topic, f"{ch.doc_key} written to {ch.topic}, declared in {owner.topic}"
        assert any(ch.doc_key.startswith(p) for p in TOPICS[ch.topic].doc_prefixes), ch.doc_key
        seen.add(owner.name)
    assert seen == set(DECLARED), "the sample journal should exercise every projection"


def test_folds_write_only_declared_document_fields() -> None:
    result = fold_batch(PROJECTIONS, sample_journal(), {}, {})
    for ch in result.changes:
        assert ch.payload is not None
        extra = set(orjson.loads(ch.payload)) - set(projection_of_key(ch.doc_key).fields)
        assert not extra, f"{ch.doc_key}: fields {sorted(extra)} are not in its proto declaration"


def test_a_key_belongs_to_its_own_projection_not_the_first_of_its_topic() -> None:
    assert _owner("runtime/run_timeline:r1") is BY_NAME["run_timelines"]
    assert _owner("runtime/run_summary:r1") is BY_NAME["run_summaries"]
    with pytest.raises(CatalogError, match="no declared prefix"):
        projection_of_key("runtime/nothing:r1")


def test_live_query_fields_are_declared_per_topic() -> None:
    runs, workers = TOPICS["runtime.run_summaries"], TOPICS["runtime.codex_worker_summaries"]
    assert {"owner", "org_id", "status"} <= set(runs.queryable)
    assert {"owner", "status"} <= set(workers.queryable)
    assert "last_event_at" in runs.orderable and isinstance(runs.orderable, tuple)


def test_admin_schemas_and_dashboard_config_cover_every_topic() -> None:
    for entry in catalog():
        assert entry["schema"]["source_events"], f"{entry['name']} has no source event schemas"
        assert entry["schema"]["documents"], f"{entry['name']} has no document schema"
    config = dashboard_config()
    assert config["topics"] == [t["name"] for t in config["topic_catalog"]] == list(TOPICS)
    assert "runtime.run_summaries" in config["live_topics"]
    assert set(config["projections"]) == set(DECLARED)


def test_daily_spend_counts_allowed_decisions_by_day_under_the_runs_org() -> None:
    result = fold_batch([BY_NAME["run_daily_spend"]], sample_journal(), {}, {})
    (doc,) = [orjson.loads(ch.payload or "null") for ch in result.changes]
    assert doc["org_id"] == "acme" and doc["days"] == {"2026-12-03": 5} and doc["total_sats"] == 5
