"""Set request fields from the text of path variables and query parameters.

The conversions follow grpc-gateway v2's default query parser, which its generated
handlers also use for nested path variables. Booleans are read as Go's
``strconv.ParseBool`` reads them, integers in base 10, enums by name or number and bytes
as standard or URL-safe base64. ``Timestamp`` is RFC 3339, ``Duration`` is Go syntax
(``1m30s``, ``1.5s``, so the JSON form works too), ``FieldMask`` is comma-separated
paths, ``Struct`` and ``Value`` are JSON text, and a wrapper type is its scalar.

A top-level path variable goes through grpc-gateway's ``runtime.Int32``-style converters
instead, which read integers with Go's base prefixes (``0x1f``, ``0o17``, ``017``, ``1_000``).

Every failure raises ``FieldValueError`` with a message that names the field.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_INTEGER = re.compile(r"[+-]?[0-9]+")
_UNSIGNED = re.compile(r"\+?[0-9]+")
_GO_LITERAL = re.compile(r"[+-]?[0-9][0-9A-Za-z_]*")
_LEGACY_OCTAL = re.compile(r"([+-]?)0([0-7_]+)")
_FLOAT = re.compile(r"[+-]?(inf|infinity|nan|[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?|[0-9]+\.)", re.I)
_GO_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
WRAPPER_TYPES = frozenset(
    {
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)
"""Well-known wrapper messages, whose JSON form is the wrapped value itself."""

Scalar = bool | int | float | str | bytes


class FieldValueError(ValueError):
    """Raised when a path or query value cannot be stored in its field."""


def descriptor_of(message: Message) -> Descriptor:
    """Return a message's descriptor with the pure-Python descriptor type for type checking."""
    return cast(Descriptor, message.DESCRIPTOR)


def resolve_field_path(
    descriptor: Descriptor, names: Sequence[str]
) -> list[FieldDescriptor] | None:
    """Resolve dotted names (proto or lowerCamel JSON names) to fields.

    Returns None when a name is unknown, because grpc-gateway ignores query parameters
    that name no request field. Raises ``FieldValueError`` when a name other than the last
    one is not a singular message field.
    """
    fields: list[FieldDescriptor] = []
    message: Descriptor | None = descriptor
    for position, name in enumerate(names):
        if message is None:
            previous = ".".join(names[:position])
            raise FieldValueError(
                f"invalid field path {'.'.join(names)!r}: {previous!r} is not a message"
            )
        field = field_by_name(message, name)
        if field is None:
            return None
        if position < len(names) - 1 and (field.message_type is None or field.is_repeated):
            raise FieldValueError(
                f"invalid field path {'.'.join(names)!r}: {name!r} is not a message"
            )
        fields.append(field)
        message = field.message_type
    return fields


def field_by_name(message: Descriptor, name: str) -> FieldDescriptor | None:
    field = message.fields_by_name.get(name)
    if field is not None:
        return field
    return next((f for f in message.fields if f.json_name == name), None)


def set_field(
    message: Message,
    fields: Sequence[FieldDescriptor],
    values: Sequence[str],
    go_literals: bool = False,
) -> None:
    """Store ``values`` in the field reached through ``fields``, creating parent messages.

    A repeated field takes every value; a map field takes ``[key, value]``; a singular
    field takes exactly one. ``go_literals`` reads integers with Go's base prefixes, as
    grpc-gateway does for top-level path variables. Raises ``FieldValueError`` naming
    the field.
    """
    target = message
    for parent in fields[:-1]:
        target = getattr(target, parent.name)
    field = fields[-1]
    path = ".".join(f.name for f in fields)
    _check_oneof(target, field, path)
    if is_map(field):
        _set_map_entry(target, field, values, path)
    elif field.is_repeated:
        _extend_repeated(target, field, values, path)
    elif len(values) != 1:
        raise FieldValueError(f"too many values for field {path!r}: {', '.join(values)}")
    else:
        _set_singular(target, field, values[0], path, go_literals)


def _check_oneof(target: Message, field: FieldDescriptor, path: str) -> None:
    oneof = field.containing_oneof
    # A proto3 `optional` field sits alone in a synthetic oneof named after it.
    if oneof is None or (len(oneof.fields) == 1 and oneof.name == "_" + field.name):
        return
    chosen = target.WhichOneof(oneof.name)
    if chosen is not None and chosen != field.name:
        raise FieldValueError(f"field {path!r}: oneof {oneof.name!r} already has {chosen!r} set")


def is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return bool(field.is_repeated and entry is not None and entry.GetOptions().map_entry)


def _set_singular(
    target: Message, field: FieldDescriptor, text: str, path: str, go_literals: bool = False
) -> None:
    if field.message_type is not None:
        getattr(target, field.name).CopyFrom(parse_message(field.message_type, text, path))
    else:
        setattr(target, field.name, parse_scalar(field, text, path, go_literals))


def _extend_repeated(
    target: Message, field: FieldDescriptor, values: Sequence[str], path: str
) -> None:
    container = getattr(target, field.name)
    if field.message_type is not None:
        for text in values:
            container.add().CopyFrom(parse_message(field.message_type, text, path))
        return
    container.extend(parse_scalar(field, text, path) for text in values)


def _set_map_entry(
    target: Message, field: FieldDescriptor, values: Sequence[str], path: str
) -> None:
    if len(values) != 2:
        raise FieldValueError(
            f"map field {path!r} needs one key and one value, got {len(values) - 1} values"
        )
    entry = field.message_type
    assert entry is not None
    key_field = entry.fields_by_name["key"]
    value_field = entry.fields_by_name["value"]
    key = parse_scalar(key_field, values[0], path + " key")
    container = getattr(target, field.name)
    if value_field.message_type is not None:
        container[key].CopyFrom(parse_message(value_field.message_type, values[1], path))
    else:
        container[key] = parse_scalar(value_field, values[1], path)


def parse_scalar(field: FieldDescriptor, text: str, path: str, go_literals: bool = False) -> Scalar:
    """Convert text to the Python value of a scalar or enum field."""
    parser = _SCALAR_PARSERS.get(field.type)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _parse_enum(field, text, path, go_literals)
    if go_literals and field.type in _INT_RANGES:
        parser = _parse_go_int
    if parser is None:
        raise FieldValueError(f"field {path!r} has a type that query parameters do not support")
    try:
        return parser(field, text)
    except ValueError as error:
        raise FieldValueError(f"invalid value for field {path!r}: {error}") from None


def _parse_bool(_field: FieldDescriptor, text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean")


def _parse_int(field: FieldDescriptor, text: str) -> int:
    low, high = _INT_RANGES[field.type]
    pattern = _UNSIGNED if low == 0 else _INTEGER
    if not pattern.fullmatch(text):
        raise ValueError(f"{text!r} is not a base-10 integer")
    return _in_range(int(text), text, low, high)


def _parse_go_int(field: FieldDescriptor, text: str) -> int:
    """Read an integer as Go's ``strconv.ParseInt(text, 0, bits)`` does."""
    low, high = _INT_RANGES[field.type]
    return _in_range(go_integer(text, signed=low < 0), text, low, high)


def go_integer(text: str, signed: bool = True) -> int:
    """Parse a Go integer literal: base prefixes ``0x``, ``0o``, ``0b``, a leading ``0``
    for octal, and underscores between digits.

    Raises:
        ValueError: the text is not such a literal, or has a sign where none is allowed.
    """
    if not _GO_LITERAL.fullmatch(text) or (not signed and text[0] == "-"):
        raise ValueError(f"{text!r} is not an integer")
    octal = _LEGACY_OCTAL.fullmatch(text)
    literal = f"{octal.group(1)}0o{octal.group(2)}" if octal else text
    try:
        return int(literal, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _in_range(value: int, text: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValueError(f"{text!r} is out of range [{low}, {high}]")
    return value


def _parse_float(field: FieldDescriptor, text: str) -> float:
    if not _FLOAT.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    value = float(text)
    if (
        field.type == FieldDescriptor.TYPE_FLOAT
        and math.isfinite(value)
        and abs(value) > 3.4028234663852886e38
    ):
        raise ValueError(f"{text!r} is out of range for a 32-bit float")
    return value


def _parse_string(_field: FieldDescriptor, text: str) -> str:
    return text


def _parse_bytes(_field: FieldDescriptor, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.urlsafe_b64decode(text)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text!r} is not base64") from None


def _parse_enum(field: FieldDescriptor, text: str, path: str, go_literals: bool = False) -> int:
    enum = field.enum_type
    assert enum is not None
    by_name = enum.values_by_name.get(text)
    if by_name is not None:
        return int(by_name.number)
    number = _enum_number(text, go_literals)
    if number is not None and number in enum.values_by_number:
        return number
    names = ", ".join(enum.values_by_name)
    raise FieldValueError(f"invalid value for field {path!r}: {text!r} is not one of {names}")


def _enum_number(text: str, go_literals: bool) -> int | None:
    if go_literals:
        try:
            return go_integer(text)
        except ValueError:
            return None
    return int(text) if _INTEGER.fullmatch(text) else None


_SCALAR_PARSERS: dict[int, Callable[[FieldDescriptor, str], Scalar]] = {
    FieldDescriptor.TYPE_BOOL: _parse_bool,
    FieldDescriptor.TYPE_STRING: _parse_string,
    FieldDescriptor.TYPE_BYTES: _parse_bytes,
    FieldDescriptor.TYPE_DOUBLE: _parse_float,
    FieldDescriptor.TYPE_FLOAT: _parse_float,
    **{kind: _parse_int for kind in _INT_RANGES},
}


def parse_message(descriptor: Descriptor, text: str, path: str) -> Message:
    """Convert text to a well-known message type; other message types are rejected.

    The message is built with the class of ``descriptor``'s own pool, so it can be copied
    into a field of a message from any pool.
    """
    name = descriptor.full_name
    message: Any = message_factory.GetMessageClass(descriptor)()
    try:
        if name == "google.protobuf.Timestamp":
            message.FromJsonString(text)
        elif name == "google.protobuf.Duration":
            message.FromNanoseconds(_duration_nanos(text))
        elif name == "google.protobuf.FieldMask":
            message.paths.extend(text.split(","))
        elif name in ("google.protobuf.Struct", "google.protobuf.Value"):
            json_format.Parse(text, message)
        elif name in WRAPPER_TYPES:
            message.value = parse_scalar(descriptor.fields_by_name["value"], text, path)
        else:
            raise FieldValueError(
                f"field {path!r} of message type {name} cannot be set from a path or query value"
            )
    except (ValueError, json_format.ParseError) as error:
        if isinstance(error, FieldValueError):
            raise
        raise FieldValueError(f"invalid value for field {path!r}: {error}") from None
    return cast(Message, message)


def _duration_nanos(text: str) -> int:
    """Parse Go ``time.ParseDuration`` syntax: an optionally signed sequence like ``1h2m3.5s``."""
    if text in ("0", "+0", "-0"):
        return 0
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in "+-" else text
    parts = list(_GO_DURATION_PART.finditer(body))
    if (
        not body
        or "".join(p.group() for p in parts) != body
        or any(p.group(1) in ("", ".") for p in parts)
    ):
        raise ValueError(f"{text!r} is not a duration such as '1.5s' or '1m30s'")
    return sign * sum(_part_nanos(p.group(1), _DURATION_UNIT_NS[p.group(2)]) for p in parts)


def _part_nanos(number: str, unit_ns: int) -> int:
    whole, _, fraction = number.partition(".")
    nanos = int(whole or "0") * unit_ns
    if fraction:
        nanos += int(fraction) * unit_ns // 10 ** len(fraction)
    return nanos
