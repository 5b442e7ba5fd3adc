"""The streamed-text projection: the kept text is always the tail of everything streamed,
the document stays bounded in bytes, and each token is an append on the wire."""

from __future__ import annotations

import random
from typing import Any

import orjson

from oa.runtime.projector.deltas import diff
from oa.runtime.projector.projections import BY_NAME, TEXT_WINDOW_CHARS
from tests.unit.test_catalog import event


def fold_text(tokens: list[str]) -> list[dict[str, Any]]:
    p = BY_NAME["run_text"]
    doc: dict[str, Any] | None = p.fold(
        None, event("run", "r1", 1, "run.started", {"org_id": "acme"}), {"org_id": "acme"}
    )
    out = []
    for seq, t in enumerate(tokens, 2):
        doc = p.fold(doc, event("run", "r1", seq, "text.delta", {"text": t}), {"text": t})
        assert doc is not None
        out.append(doc)
    return out


def test_the_kept_text_is_the_tail_and_the_document_stays_bounded() -> None:
    rnd = random.Random(7)
    tokens = ["".join(rnd.choice('ab"\\é\n') for _ in range(rnd.randint(1, 40))) for _ in range(2000)]
    tokens.insert(1000, "z" * (TEXT_WINDOW_CHARS + 500))  # one token longer than the window
    streamed = ""
    for t, doc in zip(tokens, fold_text(tokens), strict=True):
        streamed += t
        kept = "".join(doc["chunks"])
        assert doc["chars"] == len(streamed) and doc["dropped_chars"] == len(streamed) - len(kept)
        assert streamed.endswith(kept) and len(kept) <= TEXT_WINDOW_CHARS
        assert len(orjson.dumps(doc)) <= 6 * TEXT_WINDOW_CHARS + 4 * len(doc["chunks"]) + 256


def test_a_token_is_an_append_and_a_full_window_also_drops_from_the_front() -> None:
    docs = fold_text([f"word{i:04d} " for i in range(2000)])
    assert [op["op"] for op in diff(docs[0], docs[1]) if op["path"].startswith("/chunks")] == ["add"]
    ops = [op["op"] for op in diff(docs[-2], docs[-1]) if op["path"].startswith("/chunks")]
    assert ops == ["remove", "add"], ops
