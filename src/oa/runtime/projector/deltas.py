"""Deltas for growing documents: the projector computes each journal row's patch once.

Where patches come from (issue 11.2): the projector already holds a document's previous
state when it folds (it loaded it to fold into), so it diffs there, once per change, and
stores `patch` + `base_version` in the journal row. Every sync process, every socket and
every replay then sends the stored text: no diffing per node, per client or per resume,
and no previous document kept in the sync server's memory. A rebuild or a catch-up build
writes no patches (its switch batch goes whole).

Format: JSON Patch (RFC 6902, `jsonpatch`), chosen over JSON Merge Patch (RFC 7396) by
`oa bench deltas`: a merge patch cannot express "append to an array", so for a run
timeline growing by one event it is the whole `events` array (no saving), while JSON
Patch is one `add` (or, once the 50-event window slides, one `remove` + one `add`; the
library pairs the shift). Measured figures are in the bench's table and the branch's
report; the JSON Patch of a timeline append was ~40x smaller than the whole document.

A patch is kept only when its bytes are fewer than the whole payload's, and only when a
client holding the base is sure to be allowed to see it: same projection version and
same owner and org as the result (per-document authorization of the base = of the row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import jsonpatch
import orjson

from oa.khala.store.writer import DocChange, StoredDoc


def diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """RFC 6902 operations turning `before` into `after`."""
    ops: list[dict[str, Any]] = jsonpatch.make_patch(before, after).patch
    return ops


def with_patches(
    changes: Sequence[DocChange], stored: Mapping[str, StoredDoc], before: Mapping[str, Any]
) -> list[DocChange]:
    """`changes` with a patch against the stored document wherever one is smaller.

    `stored` is the documents as loaded before the batch; `before` their parsed payloads
    (the projector parsed them already to fold)."""
    out: list[DocChange] = []
    for ch in changes:
        base = stored.get(ch.doc_key)
        old = before.get(ch.doc_key)
        if (
            ch.payload is None
            or base is None
            or old is None
            or base.projection_version != ch.projection_version
        ):
            out.append(ch)
            continue
        owner, org = old.get("owner"), old.get("org_id")
        if (owner if isinstance(owner, str) else None) != ch.owner_user or (
            org if isinstance(org, str) else None
        ) != ch.org_id:
            out.append(ch)  # visibility may differ: a client seeing the row may lack the base
            continue
        patch = orjson.dumps(diff(old, orjson.loads(ch.payload))).decode()
        if len(patch) >= len(ch.payload):
            out.append(ch)
            continue
        out.append(replace(ch, patch=patch, base_version=base.doc_version, base_watermark=base.watermark))
    return out
