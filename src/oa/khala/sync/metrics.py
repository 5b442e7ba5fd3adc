"""Prometheus metrics of one Khala process, every series labelled with its `node`.

Read from the hub's own counters at scrape time (nothing is counted twice on the hot path:
the writer adds a frame and its bytes, the pump the batches it read), plus one query for
the stored topic heads, so `khala_lag_watermarks` is what this process has not yet read.

Several processes on one port each answer `/metrics` for themselves; each also listens on
a port of its own (`oa khala serve --workers`), which `oa khala status` lists, so every
process is its own scrape target (README: Operating Khala).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from oa.khala.store import reader
from oa.khala.sync.hub import Hub
from oa.khala.sync.node import Node
from oa.khala.topics import TOPIC_NAMES

NAMES = (
    "khala_node_info",
    "khala_sockets",
    "khala_live_queries",
    "khala_topic_subscribers",
    "khala_frames_sent_total",
    "khala_bytes_sent_total",
    "khala_queued_bytes",
    "khala_queued_frames",
    "khala_journal_batches_read_total",
    "khala_journal_rows_read_total",
    "khala_head_watermark",
    "khala_lag_watermarks",
)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _gauge(name: str, doc: str, node: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["node"])
    g.add_metric([node], value)
    return g


def _counter(name: str, doc: str, node: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=["node"])
    c.add_metric([node], value)
    return c


def families(hub: Hub, node: Node, stored_heads: dict[str, int]) -> list[Metric]:
    n = node.id
    info = GaugeMetricFamily(
        "khala_node_info", "This Khala process (always 1)", labels=["node", "url", "pid"]
    )
    info.add_metric([n, node.url, str(node.pid)], 1)
    subscribers = GaugeMetricFamily(
        "khala_topic_subscribers", "Sockets subscribed to the whole topic", labels=["node", "topic"]
    )
    heads = GaugeMetricFamily(
        "khala_head_watermark", "The last watermark this process read", labels=["node", "topic"]
    )
    lag = GaugeMetricFamily(
        "khala_lag_watermarks",
        "Watermarks committed in Postgres that this process has not read yet",
        labels=["node", "topic"],
    )
    for topic in TOPIC_NAMES:
        mine = hub.heads.get(topic, 0)
        subscribers.add_metric([n, topic], hub.subscribers(topic))
        heads.add_metric([n, topic], mine)
        lag.add_metric([n, topic], max(0, stored_heads.get(topic, 0) - mine))
    return [
        info,
        _gauge("khala_sockets", "Open authenticated sockets", n, len(hub.sessions)),
        _gauge("khala_live_queries", "Live queries (doc, stream, list scopes) open", n, hub.queries.count),
        subscribers,
        _counter("khala_frames_sent", "Frames written to sockets", n, hub.frames_sent),
        _counter("khala_bytes_sent", "Bytes of frames written to sockets", n, hub.bytes_sent),
        _gauge("khala_queued_bytes", "Bytes waiting in the sockets' outbound queues", n, hub.queued_bytes),
        _gauge(
            "khala_queued_frames", "Frames waiting in the sockets' outbound queues", n, hub.queued_frames()
        ),
        _counter(
            "khala_journal_batches_read",
            "Projector batches this process read from the journal (once each)",
            n,
            hub.batches_read,
        ),
        _counter("khala_journal_rows_read", "Journal rows this process read live", n, hub.rows_read),
        heads,
        lag,
    ]


async def exposition(hub: Hub, node: Node) -> bytes:
    """The process's default registry (Python, process) and Khala's series, as text."""
    stored = {topic: head for topic, (head, _floor) in (await reader.heads(hub.pool)).items()}
    registry = CollectorRegistry()
    registry.register(_Families(families(hub, node, stored)))
    return generate_latest(REGISTRY) + generate_latest(registry)
