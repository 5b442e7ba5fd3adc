"""What every Khala store backend must do, as tests a backend's test class inherits.

Shipped in the package (as tests/contract/journal_contract.py is for the journal) so a
second backend can run it: subclass `StoreContract` in a `Test...` class and override the
`store` fixture to yield a `KhalaStore` on a database of its own (the generation tests
switch the live generation). Each test uses topics and keys of its own.
"""

from __future__ import annotations

import uuid

import pytest

from oa.canonical import canonical_json, sha256_hex
from oa.khala.store.backend import KhalaStore
from oa.khala.store.writer import DocChange


def topic() -> str:
    return f"contract.{uuid.uuid4().hex[:10]}"


def change(t: str, key: str, version: int, body: dict[str, object] | None, owner: str = "u1") -> DocChange:
    if body is None:
        return DocChange(t, key, version, 1, None, None, None, None)
    data = canonical_json(body).decode()
    return DocChange(t, key, version, 1, data, sha256_hex(data.encode()), owner, "org1")


class StoreContract:
    @pytest.fixture
    def store(self) -> KhalaStore:
        raise NotImplementedError("a backend's test class overrides the `store` fixture")

    async def test_apply_journals_each_change_with_fresh_watermarks(self, store: KhalaStore) -> None:
        t = topic()
        gen = await store.live_generation()
        applied = await store.apply(
            gen, [change(t, f"{t}:a", 1, {"n": 1}), change(t, f"{t}:b", 1, {"n": 2})], {}
        )
        assert applied.heads[t] == 2 and applied.batch_id > 0
        rows = await store.rows_after({t: 0})
        assert [(r.doc_key, r.watermark, r.batch_id) for r in rows] == [
            (f"{t}:a", 1, applied.batch_id),
            (f"{t}:b", 2, applied.batch_id),
        ]
        docs = await store.documents(gen, f"{t}:")
        assert {k: d.doc_version for k, d in docs.items()} == {f"{t}:a": 1, f"{t}:b": 1}

    async def test_reapplying_a_batch_leaves_documents_as_they_were(self, store: KhalaStore) -> None:
        """Idempotent re-apply: the same changes again give the same documents (a replayed
        projector batch after a crash between fold and commit cannot corrupt a read model)."""
        t = topic()
        gen = await store.live_generation()
        batch = [change(t, f"{t}:a", 3, {"n": 1}), change(t, f"{t}:b", 4, {"n": 2})]
        await store.apply(gen, batch, {f"proj-{t}": 10})
        first = await store.documents(gen, f"{t}:")
        await store.apply(gen, batch, {f"proj-{t}": 10})
        assert await store.documents(gen, f"{t}:") == first
        assert (await store.checkpoints(gen))[f"proj-{t}"].position == 10

    async def test_deletes_remove_documents_and_are_journaled(self, store: KhalaStore) -> None:
        t = topic()
        gen = await store.live_generation()
        await store.apply(gen, [change(t, f"{t}:a", 1, {"n": 1})], {})
        await store.apply(gen, [change(t, f"{t}:a", 2, None)], {})
        assert await store.documents(gen, f"{t}:") == {}
        rows = await store.rows_after({t: 0})
        assert [r.payload is None for r in rows] == [False, True]

    async def test_rows_after_and_upto_a_watermark_never_split_a_batch(self, store: KhalaStore) -> None:
        t = topic()
        gen = await store.live_generation()
        for i in range(3):
            await store.apply(gen, [change(t, f"{t}:{i}:{j}", 1, {"i": i, "j": j}) for j in range(4)], {})
        assert [r.watermark for r in await store.rows_after({t: 4})] == list(range(5, 13))
        assert [r.watermark for r in await store.rows_after({t: 4}, {t: 8})] == [5, 6, 7, 8]
        page = await store.rows_after({t: 0}, limit=6)  # 6 rows would split the second batch
        assert [r.watermark for r in page] == [1, 2, 3, 4]

    async def test_snapshot_at_a_watermark_shows_what_the_user_may_see(self, store: KhalaStore) -> None:
        t = topic()
        gen = await store.live_generation()
        await store.apply(
            gen, [change(t, f"{t}:mine", 1, {"n": 1}, "u1"), change(t, f"{t}:other", 1, {"n": 2}, "u2")], {}
        )
        head, rows = await store.snapshot(t, "u1", None, 100)
        assert head == 2 and [r.doc_key for r in rows] == [f"{t}:mine"]
        head, rows = await store.snapshot(t, "u3", "org1", 100)  # org members see both
        assert head == 2 and len(rows) == 2
        assert (await store.heads())[t] == (2, 0)

    async def test_a_non_live_generation_is_invisible_until_switched_in(self, store: KhalaStore) -> None:
        t = topic()
        live = await store.live_generation()
        await store.apply(live, [change(t, f"{t}:a", 1, {"n": "old"})], {})
        new = await store.next_generation()
        assert new > live
        await store.apply(new, [change(t, f"{t}:a", 1, {"n": "new"})], {"p": 5}, journal=False)
        assert (await store.heads())[t] == (1, 0), "a non-journaled apply does not move the head"
        _, rows = await store.snapshot(t, "u1", None, 10)
        assert [r.payload for r in rows] == ['{"n":"old"}']
        await store.switch_generation(new, live)
        assert await store.live_generation() == new
        _, rows = await store.snapshot(t, "u1", None, 10)
        assert [r.payload for r in rows] == ['{"n":"new"}']
        assert await store.documents(live) == {} and await store.checkpoints(live) == {}

    async def test_rebuild_parity_same_changes_give_the_same_documents(self, store: KhalaStore) -> None:
        t = topic()
        live = await store.live_generation()
        batch = [change(t, f"{t}:{i}", i + 1, {"i": i}) for i in range(20)]
        await store.apply(live, batch[:10], {})
        await store.apply(live, batch[10:], {})
        new = await store.next_generation()
        await store.apply(new, batch, {}, journal=False)
        assert await store.documents(new, f"{t}:") == await store.documents(live, f"{t}:")

    async def test_prune_keeps_the_replay_budget_and_raises_the_floor(self, store: KhalaStore) -> None:
        t = topic()
        gen = await store.live_generation()
        for i in range(10):
            await store.apply(gen, [change(t, f"{t}:{i}", 1, {"i": i})], {})
        result = await store.prune_topic(t, 3600, replay_budget=4)
        assert (result.head, result.floor_before, result.floor_after, result.deleted) == (10, 0, 6, 6)
        assert [r.watermark for r in await store.rows_after({t: 6})] == [7, 8, 9, 10]
        assert (await store.heads())[t] == (10, 6)
        again = await store.prune_topic(t, 3600, replay_budget=4)
        assert again.deleted == 0 and again.floor_after == 6
        everything = await store.prune_topic(t, 0, replay_budget=100)  # all rows expired
        assert everything.floor_after == 10 and await store.rows_after({t: 6}) == []
