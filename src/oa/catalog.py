"""The topic and projection catalog, read from the generated proto descriptors.

`proto/oa/sync/v1/catalog.proto` declares every topic and projection once (ADR-0028: proto
is the schema authority). Khala (`oa.khala.topics`), control (`oa.control.domain.scopes`)
and the runtime (`oa.runtime.projector.projections`) each read this module, so none of them
imports another and no list of topics is kept by hand anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor

from oa._proto.oa.sync.v1 import catalog_options_pb2, catalog_pb2

# The generated stubs type message-valued extensions as plain field descriptors.
_TOPIC: Any = catalog_options_pb2.topic
_PROJECTION: Any = catalog_options_pb2.projection


@dataclass(frozen=True)
class TopicDecl:
    name: str
    title: str
    retention_s: int
    replay_budget: int  # journal rows a resume may replay before a full resync is cheaper
    queryable: tuple[str, ...]  # fields live queries may filter on (equality)
    orderable: tuple[str, ...]  # fields live queries may order by
    source_files: tuple[str, ...]  # proto files of the runtime events its documents fold
    doc_prefixes: tuple[str, ...]  # the key prefixes of its projections, declaration order
    dashboard_live: bool  # the dashboard subscribes on sign-in

    @property
    def doc_prefix(self) -> str:
        """The topic's first (main) document prefix, for callers that show one."""
        return self.doc_prefixes[0] if self.doc_prefixes else ""


@dataclass(frozen=True)
class ProjectionDecl:
    name: str
    topic: str
    doc_prefix: str
    version: int
    fields: tuple[str, ...]  # the document's fields (those of the declaring message)
    message: str  # the declaring message's full name


class CatalogError(ValueError):
    """The proto catalog contradicts itself (caught by the tests, at import)."""


def _messages() -> list[Descriptor]:
    return list(catalog_pb2.DESCRIPTOR.message_types_by_name.values())


def _load() -> tuple[dict[str, TopicDecl], dict[str, ProjectionDecl]]:
    projections: dict[str, ProjectionDecl] = {}
    raw_topics: list[Any] = []
    for m in _messages():
        opts = m.GetOptions()
        if opts.HasExtension(_PROJECTION):
            p = opts.Extensions[_PROJECTION]
            if p.name in projections:
                raise CatalogError(f"projection {p.name!r} is declared twice")
            names = tuple(f.name for f in m.fields)
            projections[p.name] = ProjectionDecl(p.name, p.topic, p.doc_prefix, p.version, names, m.full_name)
        if opts.HasExtension(_TOPIC):
            raw_topics.append(opts.Extensions[_TOPIC])
    topics: dict[str, TopicDecl] = {}
    for t in raw_topics:
        if t.name in topics:
            raise CatalogError(f"topic {t.name!r} is declared twice")
        mine = [p for p in projections.values() if p.topic == t.name]
        fields = {f for p in mine for f in p.fields}
        missing = [f for f in (*t.queryable, *t.orderable) if f not in fields]
        if missing:
            raise CatalogError(f"topic {t.name!r} names fields no document of it has: {missing}")
        topics[t.name] = TopicDecl(
            t.name,
            t.title or t.name,
            int(t.retention_s),
            int(t.replay_budget),
            tuple(t.queryable),
            tuple(t.orderable),
            tuple(t.source_files),
            tuple(p.doc_prefix for p in mine),
            t.dashboard_live,
        )
    for p in projections.values():
        if p.topic not in topics:
            raise CatalogError(f"projection {p.name!r} names undeclared topic {p.topic!r}")
        if not p.doc_prefix:
            raise CatalogError(f"projection {p.name!r} declares no doc_prefix")
        clash = [q.name for q in projections.values() if q is not p and q.doc_prefix.startswith(p.doc_prefix)]
        if clash:
            raise CatalogError(f"projection {p.name!r}'s prefix {p.doc_prefix!r} also covers {clash}")
    return topics, projections


TOPICS, PROJECTIONS = _load()
TOPIC_NAMES: tuple[str, ...] = tuple(TOPICS)


def projection_of_key(doc_key: str) -> ProjectionDecl:
    """The one projection whose declared prefix the key falls under (prefixes never overlap)."""
    for p in PROJECTIONS.values():
        if doc_key.startswith(p.doc_prefix):
            return p
    raise CatalogError(f"document key {doc_key!r} is under no declared prefix")
