"""Canonical JSON and the hashes built on it.

Canonical JSON is what every hash in the system is computed over: keys sorted, no
whitespace (`,` and `:` separators), UTF-8 without escaping. orjson produces exactly that
with OPT_SORT_KEYS and is ~10x faster than the stdlib on the append path. Non-finite
floats and integers beyond 64 bits are refused, because no other language would hash them
the same way.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

_OPTS = orjson.OPT_SORT_KEYS


class NotCanonicalizable(ValueError):
    """The value has no canonical JSON form (NaN, infinity, a huge int, a non-string key)."""


def canonical_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=_OPTS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise NotCanonicalizable(str(exc)) from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload_hash(payload: Any) -> str:
    return sha256_hex(canonical_json(payload))


def event_hash(stream_id: str, seq: int, event_type: str, p_hash: str, prev_hash: str | None) -> str:
    """`sha256(run_id|seq|event_type|payload_hash|prev_hash or "root")`, hex."""
    material = f"{stream_id}|{seq}|{event_type}|{p_hash}|{prev_hash or 'root'}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()
