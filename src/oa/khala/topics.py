"""The topic catalog: what clients can subscribe to, how long it is kept, how far a resume
may replay, which fields live queries may filter (`queryable`) and order on (`orderable`).
Topics are the coarse scopes a sync token carries.

Derived from the proto declaration (`proto/oa/sync/v1/catalog.proto`, read by `oa.catalog`);
nothing here is written by hand.
"""

from __future__ import annotations

from typing import Any

from oa.catalog import PROJECTIONS, TOPIC_NAMES, TOPICS, TopicDecl, projection_of_key

Topic = TopicDecl
HOUR = 3600

__all__ = ["HOUR", "PROJECTIONS", "TOPICS", "TOPIC_NAMES", "Topic", "dashboard_config", "projection_of_key"]


def dashboard_config() -> dict[str, Any]:
    """What the dashboard needs to know about topics (served as JSON; the JS hard-codes none)."""
    return {
        "topics": list(TOPICS),
        "live_topics": [t.name for t in TOPICS.values() if t.dashboard_live],
        "topic_catalog": [
            {
                "name": t.name,
                "title": t.title,
                "doc_prefixes": list(t.doc_prefixes),
                "queryable": list(t.queryable),
                "orderable": list(t.orderable),
            }
            for t in TOPICS.values()
        ],
        "projections": {
            p.name: {"topic": p.topic, "doc_prefix": p.doc_prefix, "version": p.version}
            for p in PROJECTIONS.values()
        },
    }
