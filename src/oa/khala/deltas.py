"""Applying a server's delta on the client: JSON Patch (RFC 6902, `jsonpatch`) against the
held document, checked by the resulting document's `payload_hash`.

A patch that cannot apply (the client lacks the base, or the patch does not fit what it
holds) or whose result hashes differently yields None: the caller then asks the server for
the whole document (`fetch`) instead of showing something wrong.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer
import orjson

from oa.canonical import canonical_json, sha256_hex

FETCH_KEYS = 100  # the most keys one `fetch` may name (protocol.MAX_FETCH_KEYS)


def payload_hash(payload: Any) -> str:
    """What the projector stores: sha256 hex of the canonical JSON."""
    return sha256_hex(canonical_json(payload))


def is_patch(update: dict[str, Any]) -> bool:
    return update.get("patch") is not None


def holds_base(update: dict[str, Any], projection_version: int, doc_version: int) -> bool:
    return (int(update.get("projection_version") or 0), update.get("base_version")) == (
        projection_version,
        doc_version,
    )


def patched(base: Any, update: dict[str, Any]) -> dict[str, Any] | None:
    """`base` with the update's patch applied, if that gives the update's payload_hash."""
    try:
        # Applied in place to a copy (orjson's round trip is several times cheaper than the
        # library's deepcopy), so a patch failing halfway leaves `base` untouched.
        result = jsonpatch.apply_patch(orjson.loads(orjson.dumps(base)), update["patch"], in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError, IndexError):
        return None
    if not isinstance(result, dict) or payload_hash(result) != update.get("payload_hash"):
        return None
    return result


def fetch_frames(topic: str, keys: list[str], sub: str = "") -> list[dict[str, Any]]:
    """`fetch` messages for `keys` (at most FETCH_KEYS each)."""
    frames = []
    for i in range(0, len(keys), FETCH_KEYS):
        frame: dict[str, Any] = {"type": "fetch", "topic": topic, "doc_keys": keys[i : i + FETCH_KEYS]}
        if sub:
            frame["sub"] = sub
        frames.append(frame)
    return frames
