"""The sync protocol's messages as plain functions: parse what clients send, build what
the server sends. No sockets here (`session.py` does the waiting).

The shapes are defined in `proto/oa/sync/v1/sync.proto`; JSON on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from oa.khala.topics import TOPICS

MAX_MESSAGE_BYTES = 64 * 1024
READ_TYPES = frozenset({"auth", "refresh_token", "subscribe", "unsubscribe", "heartbeat", "fetch"})
MAX_FETCH_KEYS = 100  # documents one `fetch` may ask for
MAX_KEY_CHARS = 512


class ProtocolError(Exception):
    """A message the server refuses: becomes an `error` frame with this code."""

    def __init__(self, code: str, message: str, *, fatal: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.extra = extra

    def frame(self) -> bytes:
        return error_frame(self.code, self.message, fatal=self.fatal, **self.extra)


@dataclass(frozen=True)
class Subscribe:
    topics: tuple[str, ...]
    resume_after: dict[str, int] = field(default_factory=dict)
    request_id: str = ""


def parse(raw: str | bytes) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            "payload_too_large", f"messages are limited to {MAX_MESSAGE_BYTES} bytes; this one was {len(raw)}"
        )
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("bad_request", "messages must be JSON objects with a `type`") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_request", "messages must be JSON objects with a string `type`")
    if msg["type"] not in READ_TYPES:
        raise ProtocolError(
            "forbidden",
            f"{msg['type']!r} is refused: Khala is read-only for clients and the runtime is its only "
            "writer; send changes to the runtime API. Allowed here: " + ", ".join(sorted(READ_TYPES)),
        )
    return msg


def token_of(msg: dict[str, Any], fatal: bool = True) -> str:
    """The message's token; missing or not a non-empty string is refused (`fatal` for `auth`)."""
    token = msg.get("token")
    if not isinstance(token, str) or not token:
        raise ProtocolError(
            "unauthorized",
            f"{msg['type']} needs a `token`: a non-empty string, the sync token from control",
            fatal=fatal,
        )
    return token


def parse_subscribe(msg: dict[str, Any], scopes: frozenset[str]) -> Subscribe:
    topics = msg.get("topics")
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) for t in topics):
        raise ProtocolError("bad_subscription", "subscribe needs `topics`: a non-empty list of topic names")
    unknown = [t for t in topics if t not in TOPICS]
    if unknown:
        raise ProtocolError(
            "bad_subscription", f"unknown topics {unknown}; known: {', '.join(TOPICS)}", topics=unknown
        )
    denied = [t for t in topics if t not in scopes]
    if denied:
        raise ProtocolError(
            "forbidden_topic",
            f"your token does not grant {denied}; ask control for a token with these scopes",
            topic=denied[0],
        )
    resume = msg.get("resume_after", {}) or {}
    if not isinstance(resume, dict):
        raise ProtocolError("bad_subscription", "`resume_after` must map topic -> watermark")
    cursors: dict[str, int] = {}
    for topic, wm in resume.items():
        if topic not in topics:
            raise ProtocolError("bad_subscription", f"resume_after names {topic!r}, which is not in `topics`")
        if not isinstance(wm, int) or isinstance(wm, bool) or wm < 0:
            raise ProtocolError("bad_subscription", f"resume_after[{topic!r}] must be a non-negative integer")
        cursors[topic] = wm
    rid = msg.get("request_id", "")
    return Subscribe(tuple(dict.fromkeys(topics)), cursors, rid if isinstance(rid, str) else "")


@dataclass(frozen=True)
class Fetch:
    """A client's request for whole documents (it could not apply a patch)."""

    topic: str
    doc_keys: tuple[str, ...]
    sub: str = ""
    request_id: str = ""


_FETCH_FIELDS = frozenset({"type", "topic", "doc_keys", "sub", "request_id"})


def parse_fetch(msg: dict[str, Any], scopes: frozenset[str]) -> Fetch:
    """`{type: fetch, topic, doc_keys: [1..100 keys], sub?, request_id?}`; refusals name
    what is allowed (bad_request) or the topic the token lacks (forbidden_topic)."""
    sub = msg.get("sub", "")
    rid = msg.get("request_id", "")
    echo: dict[str, Any] = {}
    if isinstance(sub, str) and sub:
        echo["sub"] = sub
    if isinstance(rid, str) and rid:
        echo["request_id"] = rid

    def bad(message: str) -> ProtocolError:
        return ProtocolError("bad_request", message, **echo)

    unknown = sorted(set(msg) - _FETCH_FIELDS)
    if unknown:
        raise bad(f"unknown fetch fields {unknown}; allowed: topic, doc_keys, sub, request_id")
    if not isinstance(sub, str) or len(sub) > 128:
        raise bad("fetch `sub` must be a string of at most 128 characters: the live query it is for")
    if not isinstance(rid, str) or len(rid) > 128:
        raise bad("fetch `request_id` must be a string of at most 128 characters")
    topic = msg.get("topic")
    if not isinstance(topic, str) or topic not in TOPICS:
        raise bad(f"fetch needs `topic`: one of {', '.join(TOPICS)}")
    if topic not in scopes:
        raise ProtocolError(
            "forbidden_topic", f"your token does not grant {topic}; ask control for it", topic=topic, **echo
        )
    keys = msg.get("doc_keys")
    if (
        not isinstance(keys, list)
        or not 1 <= len(keys) <= MAX_FETCH_KEYS
        or not all(isinstance(k, str) and 0 < len(k) <= MAX_KEY_CHARS for k in keys)
    ):
        raise bad(
            f"fetch needs `doc_keys`: a list of 1 to {MAX_FETCH_KEYS} document keys,"
            f" each a non-empty string of at most {MAX_KEY_CHARS} characters"
        )
    return Fetch(topic, tuple(dict.fromkeys(keys)), sub, rid)


def error_frame(code: str, message: str, *, fatal: bool = False, **extra: Any) -> bytes:
    return orjson.dumps({"type": "error", "code": code, "message": message, "fatal": fatal, **extra})


def frame(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, **fields})
