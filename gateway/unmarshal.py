"""JSON request bodies into messages, with the results of protobuf's ``json_format``.

``parse_dict(document, message)`` fills ``message`` exactly as
``json_format.ParseDict(document, message, ignore_unknown_fields=True)`` does. A document
whose keys all name fields of the common shapes below takes a planned path that skips
``ParseDict``'s generic walk over the descriptor. Any other document, and any document
with a value the planned path does not accept, is parsed again by ``ParseDict``. So the
results and the error messages are always ``ParseDict``'s.

The planned path accepts:

- singular fields outside a oneof: strings without surrogates, booleans, integers given as
  JSON numbers or decimal strings, enums given by name or by a defined number;
- ``Timestamp``, ``Duration`` and ``FieldMask`` given as strings;
- other messages given as objects;
- repeated fields of those scalars, and repeated messages given as objects.

Everything else (floats, bytes, maps, oneofs, the other well-known types, ``null``,
unknown keys, two keys naming one field) goes to ``ParseDict``.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_F = FieldDescriptor
_STRING, _BOOL, _INTEGER, _ENUM, _MESSAGE, _FROM_STRING = range(6)
_INTEGER_TYPES = frozenset(
    {
        _F.TYPE_INT32,
        _F.TYPE_SINT32,
        _F.TYPE_SFIXED32,
        _F.TYPE_UINT32,
        _F.TYPE_FIXED32,
        _F.TYPE_INT64,
        _F.TYPE_SINT64,
        _F.TYPE_SFIXED64,
        _F.TYPE_UINT64,
        _F.TYPE_FIXED64,
    }
)
_FROM_STRING_TYPES = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)
_DECIMAL = re.compile(r"-?[0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_PLANNED_DEPTH = 32
"""Objects nested deeper than this go to ``ParseDict``, which enforces its own limit."""


class _Unplanned(Exception):
    """The document has a value that only ``ParseDict`` handles."""


class _FieldPlan:
    """A planned field: its name, its number and the kind of JSON value it takes."""

    __slots__ = ("enum_numbers", "kind", "name", "number", "repeated")

    def __init__(self, field: FieldDescriptor, kind: int) -> None:
        self.kind = kind
        self.name = field.name
        self.number = field.number
        self.repeated = field.is_repeated
        # Enum value numbers by name, and by themselves so that a defined number is found.
        self.enum_numbers: dict[str | int, int] = {}
        if field.enum_type is not None:
            for value in field.enum_type.values:
                self.enum_numbers[value.name] = value.number
                self.enum_numbers[value.number] = value.number


_PLANS: dict[Descriptor, dict[str, _FieldPlan] | None] = {}


def parse_dict(document: Any, message: Message) -> None:
    """Fill the empty ``message`` from the decoded JSON ``document``.

    Raises:
        json_format.ParseError: ``ParseDict`` rejects the document.
    """
    try:
        _merge_object(document, message, 0)
        return
    except (_Unplanned, ValueError, TypeError):
        message.Clear()
    json_format.ParseDict(document, message, ignore_unknown_fields=True)


def _merge_object(document: Any, message: Message, depth: int) -> None:
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    plan = _plan(descriptor)
    if plan is None or type(document) is not dict or depth > MAX_PLANNED_DEPTH:
        raise _Unplanned
    seen: set[int] = set()
    for key, value in document.items():
        entry = plan.get(key)
        if entry is None or value is None or entry.number in seen:
            raise _Unplanned
        seen.add(entry.number)
        if not entry.repeated:
            _set(message, entry, value, depth)
        elif type(value) is not list:
            raise _Unplanned
        elif entry.kind == _MESSAGE:
            items = getattr(message, entry.name)
            for item in value:
                _merge_object(item, items.add(), depth + 1)
        else:
            getattr(message, entry.name).extend([_scalar(entry, item) for item in value])


def _set(message: Message, entry: _FieldPlan, value: Any, depth: int) -> None:
    if entry.kind == _MESSAGE:
        child = getattr(message, entry.name)
        child.SetInParent()
        _merge_object(value, child, depth + 1)
    elif entry.kind == _FROM_STRING:
        if type(value) is not str:
            raise _Unplanned
        child = getattr(message, entry.name)
        child.SetInParent()
        child.FromJsonString(value)
    else:
        setattr(message, entry.name, _scalar(entry, value))


def _scalar(entry: _FieldPlan, value: Any) -> Any:
    """Return the field value of a JSON scalar. Setting the field checks the integer range."""
    kind = type(value)
    accepted = False
    if entry.kind == _STRING:
        accepted = kind is str and (value.isascii() or not _SURROGATE.search(value))
    elif entry.kind == _BOOL:
        accepted = kind is bool
    elif entry.kind == _INTEGER:
        if kind is str and _DECIMAL.fullmatch(value):
            return int(value)
        accepted = kind is int
    elif entry.kind == _ENUM and (kind is str or kind is int) and value in entry.enum_numbers:
        return entry.enum_numbers[value]
    if not accepted:
        raise _Unplanned
    return value


def _plan(descriptor: Descriptor) -> dict[str, _FieldPlan] | None:
    """Return the planned fields of ``descriptor`` by JSON key (proto and lowerCamel names).

    None means the message itself is a well-known type that only ``ParseDict`` fills.
    """
    if descriptor in _PLANS:
        return _PLANS[descriptor]
    plan: dict[str, _FieldPlan] | None = None
    if not descriptor.full_name.startswith("google.protobuf."):
        plan = {}
        for field in descriptor.fields:
            kind = _kind(field)
            if kind is not None:
                plan[field.name] = _FieldPlan(field, kind)
        # A key is looked up among the JSON names first, as ParseDict does.
        for field in descriptor.fields:
            if field.name in plan:
                plan[field.json_name] = plan[field.name]
            else:
                plan.pop(field.json_name, None)
    _PLANS[descriptor] = plan
    return plan


def _kind(field: FieldDescriptor) -> int | None:
    if field.containing_oneof is not None or field.is_extension:
        return None
    if field.message_type is not None:
        if field.message_type.GetOptions().map_entry:
            return None
        if field.message_type.full_name in _FROM_STRING_TYPES:
            return None if field.is_repeated else _FROM_STRING
        if field.message_type.full_name.startswith("google.protobuf."):
            return None
        return _MESSAGE
    if field.type == _F.TYPE_STRING:
        return _STRING
    if field.type == _F.TYPE_BOOL:
        return _BOOL
    if field.type in _INTEGER_TYPES:
        return _INTEGER
    if field.type == _F.TYPE_ENUM:
        return _ENUM
    return None
