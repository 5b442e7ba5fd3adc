"""Event payload validation against `proto/` (the schema authority).

The mapping from event type to payload message is read from the `(event_type)` option on
each message, so adding a type is a proto change, never a Python one.

The payload is stored and hashed as sent, not as protobuf would re-encode it, so the proto
JSON mapping's leniencies would give one event several spellings: `toolCallId` for
`tool_call_id`, `"5"` or `5.0` for the integer 5, `"NaN"` for a double. A projector reading
`tool_call_id` would miss the first. `_check_strict` therefore insists on the proto field
names and on JSON numbers for numeric fields before protobuf checks the rest.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from oa._proto.oa.runtime.v1 import events_pb2, options_pb2, policy_pb2, workers_pb2
from oa.exceptions import InvalidRequest

_MODULES = (events_pb2, policy_pb2, workers_pb2)
_F = FieldDescriptor
_INTEGER = frozenset(
    {
        _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_SINT32,
        _F.TYPE_SINT64, _F.TYPE_FIXED32, _F.TYPE_FIXED64, _F.TYPE_SFIXED32, _F.TYPE_SFIXED64,
    }
)  # fmt: skip
_FLOATING = frozenset({_F.TYPE_DOUBLE, _F.TYPE_FLOAT})
# Free-form JSON by design: any keys, any values.
_FREE_FORM = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})


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
    _check_strict(cls.DESCRIPTOR, payload, event_type, "payload")
    try:
        json_format.ParseDict(payload, cls(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        fields = [f.name for f in cls.DESCRIPTOR.fields]
        raise InvalidRequest(
            f"payload does not match {cls.DESCRIPTOR.full_name} for {event_type}: {exc}",
            {"field": "payload", "event_type": event_type, "allowed_fields": fields},
        ) from None


def _check_strict(desc: Descriptor | Any, value: dict[str, Any], event_type: str, path: str) -> None:
    for key, item in value.items():
        field = desc.fields_by_name.get(key)
        if field is None:
            names = [f.name for f in desc.fields]
            raise InvalidRequest(
                f"{path}.{key} is not a field of {desc.full_name} for {event_type}; "
                f"use the proto field names: {', '.join(names)}",
                {"field": f"{path}.{key}", "event_type": event_type, "allowed_fields": names},
            )
        items = item if field.is_repeated and isinstance(item, list) else [item]
        for one in items:
            if one is None:
                continue
            where = f"{path}.{key}"
            if field.type in _INTEGER and (isinstance(one, bool) or not isinstance(one, int)):
                _wrong_type(where, "an integer (a JSON number without a fraction)", one, event_type)
            if field.type in _FLOATING and (isinstance(one, bool) or not isinstance(one, int | float)):
                _wrong_type(where, "a finite JSON number", one, event_type)
            sub = field.message_type
            if (
                sub is not None
                and sub.full_name not in _FREE_FORM
                and not sub.GetOptions().map_entry
                and isinstance(one, dict)
            ):
                _check_strict(sub, one, event_type, where)


def _wrong_type(where: str, wanted: str, got: Any, event_type: str) -> None:
    raise InvalidRequest(
        f"{where} of {event_type} must be {wanted}, got {got!r}",
        {"field": where, "event_type": event_type},
    )
