"""The bus between Khala nodes as settings (`OA_KHALA_BUS`, `OA_KHALA_NATS_URL`,
`OA_KHALA_BUS_SUBJECT`): read at an entry point into `KhalaSettings.bus`. Kept apart from
`bus.py` so that reading settings imports neither NATS nor the hub."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

BUS_KINDS = ("postgres", "nats")
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_BUS_SUBJECT = "oa.khala.journal"


@dataclass(frozen=True)
class BusSettings:
    """The NATS JetStream bus between nodes (`OA_KHALA_BUS=nats`, see `oa.khala.sync.bus`);
    None in `KhalaSettings.bus` is Postgres alone (each node LISTENs and reads the journal)."""

    url: str = DEFAULT_NATS_URL
    subject: str = DEFAULT_BUS_SUBJECT

    def __post_init__(self) -> None:
        if not re.fullmatch(r"(nats|tls|ws|wss)://[^\s/]+/?", self.url):
            raise ValueError(f"OA_KHALA_NATS_URL={self.url!r}: give the NATS server as nats://host:port")
        if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", self.subject):
            raise ValueError(
                f"OA_KHALA_BUS_SUBJECT={self.subject!r}: use dot-separated tokens of letters, "
                "digits, '_' or '-' (no spaces or wildcards), e.g. oa.khala.journal"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BusSettings | None:
        """`OA_KHALA_BUS` (postgres, the default, or nats), `OA_KHALA_NATS_URL`,
        `OA_KHALA_BUS_SUBJECT` (one per database sharing a NATS server)."""
        kind = env.get("OA_KHALA_BUS", "").strip().lower() or "postgres"
        if kind not in BUS_KINDS:
            raise ValueError(f"OA_KHALA_BUS={kind!r} is not known: use postgres (the default) or nats")
        if kind == "postgres":
            return None
        return cls(
            env.get("OA_KHALA_NATS_URL", "").strip() or DEFAULT_NATS_URL,
            env.get("OA_KHALA_BUS_SUBJECT", "").strip() or DEFAULT_BUS_SUBJECT,
        )
