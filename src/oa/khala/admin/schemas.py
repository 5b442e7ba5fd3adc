"""Topic schemas for agents, read from the generated proto descriptors (proto/ is the authority).

Every topic carries `oa.sync.v1.Update` rows on the wire; its documents are folded from the
runtime events named here, whose messages are listed so an agent can read the field shapes.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from oa._proto.oa.runtime.v1 import events_pb2, policy_pb2, workers_pb2  # noqa: F401 (fills the pool)
from oa._proto.oa.sync.v1 import sync_pb2
from oa.khala.topics import PROJECTIONS, TOPICS


def _sources(topic: str) -> list[Descriptor]:
    """The messages of the proto files the topic's declaration names as its sources.

    An unknown file is an error at import (a test imports this), never a silently empty schema."""
    pool = descriptor_pool.Default()
    return [
        m for f in TOPICS[topic].source_files for m in pool.FindFileByName(f).message_types_by_name.values()
    ]


SOURCES: dict[str, list[Descriptor]] = {t: _sources(t) for t in TOPICS}
_TYPES = {v: k[5:].lower() for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")}


def message_schema(d: Any) -> dict[str, Any]:
    fields = []
    for f in d.fields:
        entry: dict[str, Any] = {
            "name": f.name,
            "number": f.number,
            "type": f.message_type.full_name if f.message_type else _TYPES.get(f.type, str(f.type)),
        }
        if f.is_repeated:
            entry["repeated"] = True
        fields.append(entry)
    return {"message": d.full_name, "fields": fields}


def topic_schema(topic: str) -> dict[str, Any]:
    return {
        "wire": message_schema(sync_pb2.Update.DESCRIPTOR),
        "source_events": [message_schema(d) for d in SOURCES.get(topic, [])],
        "documents": [
            {"projection": p.name, "doc_prefix": p.doc_prefix, "version": p.version, **_document(p.message)}
            for p in PROJECTIONS.values()
            if p.topic == topic
        ],
    }


def _document(full_name: str) -> dict[str, Any]:
    return message_schema(descriptor_pool.Default().FindMessageTypeByName(full_name))


def catalog() -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "doc_prefix": t.doc_prefix,
            "doc_prefixes": list(t.doc_prefixes),
            "queryable": list(t.queryable),
            "orderable": list(t.orderable),
            "retention_s": t.retention_s,
            "replay_budget": t.replay_budget,
            "schema": topic_schema(t.name),
        }
        for t in TOPICS.values()
    ]
