"""Event payload validation against `proto/` (the schema authority).

The mapping from event type to payload message is read from the `(event_type)` option on
each message, so adding a type is a proto change, never a Python one.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from oa._proto.oa.runtime.v1 import events_pb2, options_pb2, policy_pb2
from oa.exceptions import InvalidRequest

_MODULES = (events_pb2, policy_pb2)


@cache
def payload_messages() -> dict[str, type[Message]]:
    """`{event_type: message class}` for every payload message in the runtime package."""
    found: dict[str, type[Message]] = {}
    for module in _MODULES:
        for name, descriptor in module.DESCRIPTOR.message_types_by_name.items():
            opts = descriptor.GetOptions()
            if opts.HasExtension(options_pb2.event_type):
                found[opts.Extensions[options_pb2.event_type]] = getattr(module, name)
    return found


def known_event_types() -> list[str]:
    return sorted(payload_messages())


def validate_payload(event_type: str, payload: Any) -> None:
    """Refuse a payload that does not match its proto message (names, types, nesting)."""
    messages = payload_messages()
    cls = messages.get(event_type)
    if cls is None:
        raise InvalidRequest(
            f"unknown event_type {event_type!r}; use one of the types defined in proto/",
            {"field": "event_type", "known_event_types": known_event_types()},
        )
    if not isinstance(payload, dict):
        raise InvalidRequest(
            f"payload of {event_type} must be a JSON object, got {type(payload).__name__}",
            {"field": "payload"},
        )
    try:
        json_format.ParseDict(payload, cls(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        fields = [f.name for f in cls.DESCRIPTOR.fields]
        raise InvalidRequest(
            f"payload does not match {cls.DESCRIPTOR.full_name} for {event_type}: {exc}",
            {"field": "payload", "event_type": event_type, "allowed_fields": fields},
        ) from None
