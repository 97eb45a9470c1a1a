"""Response JSON as grpc-gateway v2's default marshaler writes it.

That marshaler is protojson with ``EmitUnpopulated: true``. Field names are lowerCamel,
64-bit integers are strings and enums are names. Fields without presence are printed with
their zero value (``""``, ``0``, ``false``, ``[]``, ``{}``, the first enum name), and unset
singular message fields are printed as ``null``. Fields of a real oneof are printed only
when set.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gateway.fields import WRAPPER_TYPES, descriptor_of, is_map

CONTENT_TYPE = "application/json"

# Types whose JSON form is not an object of their fields, so no nulls are added inside.
_SPECIAL_JSON_TYPES = (
    frozenset(
        {
            "google.protobuf.Any",
            "google.protobuf.Timestamp",
            "google.protobuf.Duration",
            "google.protobuf.FieldMask",
            "google.protobuf.Struct",
            "google.protobuf.Value",
            "google.protobuf.ListValue",
            "google.protobuf.Empty",
        }
    )
    | WRAPPER_TYPES
)


def message_to_value(message: Message) -> Any:
    """Return the JSON value (dicts, lists, scalars) of a message.

    Raises:
        TypeError: an ``Any`` inside contains a type missing from the descriptor pool.
    """
    value = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=False,
    )
    if isinstance(value, dict) and message.DESCRIPTOR.full_name not in _SPECIAL_JSON_TYPES:
        _add_nulls(message, value)
    return value


def response_value(message: Message, response_body: str) -> Any:
    """Return the JSON value of the whole response, or of its ``response_body`` field."""
    if not response_body:
        return message_to_value(message)
    field = message.DESCRIPTOR.fields_by_name[response_body]
    whole = message_to_value(message)
    return whole.get(field.json_name)


def dumps(value: Any) -> bytes:
    """Serialize a JSON value compactly as UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _add_nulls(message: Message, value: dict[str, Any]) -> None:
    """Add ``null`` for unset singular message fields, recursing into nested messages."""
    descriptor = descriptor_of(message)
    for field in descriptor.fields:
        if field.message_type is None:
            continue
        key = field.json_name
        if is_map(field):
            _nulls_in_map(message, field, value.get(key))
        elif field.is_repeated:
            _nulls_in_list(getattr(message, field.name), value.get(key))
        elif message.HasField(field.name):
            _nulls_in_child(getattr(message, field.name), value.get(key))
        elif field.containing_oneof is None:
            value[key] = None


def _nulls_in_child(child: Message, child_value: Any) -> None:
    if isinstance(child_value, dict) and child.DESCRIPTOR.full_name not in _SPECIAL_JSON_TYPES:
        _add_nulls(child, child_value)


def _nulls_in_list(items: Any, list_value: Any) -> None:
    if isinstance(list_value, list):
        for item, item_value in zip(items, list_value, strict=False):
            _nulls_in_child(item, item_value)


def _nulls_in_map(message: Message, field: FieldDescriptor, map_value: Any) -> None:
    entry = field.message_type
    assert entry is not None
    if entry.fields_by_name["value"].message_type is None or not isinstance(map_value, dict):
        return
    for key, item in getattr(message, field.name).items():
        _nulls_in_child(
            item, map_value.get(str(key).lower() if isinstance(key, bool) else str(key))
        )
