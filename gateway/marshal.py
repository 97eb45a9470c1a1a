"""Response JSON as grpc-gateway v2's default marshaler writes it.

That marshaler is Go's protojson with ``EmitUnpopulated: true``:

- fields in declaration order under their lowerCamel JSON names;
- fields without presence printed with their zero value (``""``, ``0``, ``false``, ``[]``,
  ``{}``, the enum's zero name); unset singular message fields printed as ``null``;
  fields of a oneof (including proto3 ``optional`` fields) printed only when set;
- 64-bit integers as strings, enums by name (a number without a name as the number),
  bytes as standard base64, map keys sorted;
- doubles in the shortest form that reads back exactly, without an exponent between
  1e-6 and 1e21 (``1``, not ``1.0``), and ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
- the well-known types in their JSON forms (RFC 3339 timestamps, ``"1.5s"`` durations,
  comma-separated lowerCamel field masks, wrappers as their value, ``Struct`` as an object,
  ``Any`` as an object with ``@type``).

Go's protojson inserts random spaces into its output on purpose, so clients of grpc-gateway
can rely on the JSON value but not on its bytes. This module writes compact JSON.
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from google.protobuf import descriptor_pool, field_mask_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import DecodeError, Message

CONTENT_TYPE = "application/json"

_F = FieldDescriptor
_INT64_TYPES = frozenset(
    {_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64, _F.TYPE_UINT64, _F.TYPE_FIXED64}
)
_ANY = "google.protobuf.Any"
_NULL_VALUE_ENUM = "google.protobuf.NullValue"

# Field plan kinds. _PLAIN is a scalar printed as its Python value (string, bool, 32-bit
# integer); _SCALAR needs ``_scalar`` (64-bit integers, floats, bytes, enums).
_MAP, _LIST, _MESSAGE, _SCALAR, _PRESENCE_SCALAR, _PLAIN = range(6)
_PLAIN_TYPES = frozenset(
    (
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    )
)


class MarshalError(TypeError):
    """Raised when a message cannot be printed, e.g. an ``Any`` of a type not in any pool."""


def message_to_value(message: Message, pool: descriptor_pool.DescriptorPool | None = None) -> Any:
    """Return the JSON value (dicts, lists, scalars) of ``message``.

    ``pool`` resolves the types inside ``Any`` values, then the default pool does.

    Raises:
        MarshalError: an ``Any`` contains a type that neither pool knows, or bytes that do
            not parse as that type.
    """
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    special = _WELL_KNOWN.get(descriptor.full_name)
    if special is not None:
        return special(message, pool)
    value: dict[str, Any] = {}
    for name, json_name, kind, field in _plan(descriptor):
        if kind is _PLAIN:
            value[json_name] = getattr(message, name)
        elif kind is _SCALAR:
            value[json_name] = _scalar(field, getattr(message, name))
        elif kind is _LIST:
            value[json_name] = [_element(field, item, pool) for item in getattr(message, name)]
        elif kind is _MAP:
            value[json_name] = _map_value(field, getattr(message, name), pool)
        elif message.HasField(name):
            child = getattr(message, name)
            value[json_name] = (
                message_to_value(child, pool) if kind is _MESSAGE else _scalar(field, child)
            )
        elif field.containing_oneof is None:
            value[json_name] = None
    return value


def response_value(
    message: Message, response_body: str, pool: descriptor_pool.DescriptorPool | None = None
) -> Any:
    """Return the JSON value of the whole response, or of its ``response_body`` field.

    NOTE: grpc-gateway prints a non-message ``response_body`` field with Go's encoding/json,
    which writes a 64-bit integer as a JSON number. Here it stays a string, as in protojson.
    """
    if not response_body:
        return message_to_value(message, pool)
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    field = descriptor.fields_by_name[response_body]
    value = getattr(message, response_body)
    if _is_map(field):
        return _map_value(field, value, pool)
    if field.is_repeated:
        return [_element(field, item, pool) for item in value]
    if field.message_type is not None:
        return message_to_value(value, pool) if message.HasField(response_body) else None
    return _scalar(field, value)


def dumps(value: Any) -> bytes:
    """Serialize a JSON value compactly as UTF-8."""
    return orjson.dumps(value)


_PLANS: dict[Descriptor, list[tuple[str, str, int, FieldDescriptor]]] = {}


def _plan(descriptor: Descriptor) -> list[tuple[str, str, int, FieldDescriptor]]:
    """Return (name, JSON name, kind, field) for each field, in declaration order; cached."""
    plan = _PLANS.get(descriptor)
    if plan is None:
        plan = [(f.name, f.json_name, _kind(f), f) for f in descriptor.fields]
        _PLANS[descriptor] = plan
    return plan


def _kind(field: FieldDescriptor) -> int:
    if _is_map(field):
        return _MAP
    if field.is_repeated:
        return _LIST
    if field.message_type is not None:
        return _MESSAGE
    if field.has_presence:
        return _PRESENCE_SCALAR
    return _PLAIN if field.type in _PLAIN_TYPES else _SCALAR


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return bool(field.is_repeated and entry is not None and entry.GetOptions().map_entry)


def _element(field: FieldDescriptor, item: Any, pool: Any) -> Any:
    if field.message_type is not None:
        return message_to_value(item, pool)
    return _scalar(field, item)


def _map_value(field: FieldDescriptor, entries: Any, pool: Any) -> dict[str, Any]:
    entry = field.message_type
    assert entry is not None
    value_field = entry.fields_by_name["value"]
    return {_map_key(key): _element(value_field, entries[key], pool) for key in sorted(entries)}


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    kind = field.type
    if kind in _INT64_TYPES:
        return str(value)
    if kind == _F.TYPE_DOUBLE:
        return double_value(value)
    if kind == _F.TYPE_FLOAT:
        return double_value(type_checkers.ToShortestFloat(value))
    if kind == _F.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if kind == _F.TYPE_ENUM:
        return _enum_name(field, value)
    return value


def _enum_name(field: FieldDescriptor, number: int) -> Any:
    enum = field.enum_type
    assert enum is not None
    if enum.full_name == _NULL_VALUE_ENUM:
        return None
    described = enum.values_by_number.get(number)
    return described.name if described is not None else number


def double_value(number: float) -> Any:
    """Return a JSON value that orjson writes as Go's protojson writes the double."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    magnitude = abs(number)
    if number.is_integer() and magnitude < 1e21:
        # orjson writes integers of at most 64 bits; larger ones go out as raw JSON text.
        return int(number) if magnitude < 2**63 else orjson.Fragment(b"%d" % int(number))
    text = repr(number)
    if "e" not in text:
        return number
    if 1e-6 <= magnitude < 1e21:
        return orjson.Fragment(format(Decimal(text), "f").encode())
    mantissa, exponent = text.split("e")
    sign = exponent[0]
    digits = exponent[1:].lstrip("0") or "0"
    if sign == "+" and len(digits) < 2:
        digits = digits.rjust(2, "0")
    return orjson.Fragment(f"{mantissa}e{sign}{digits}".encode())


def _json_string(message: Any, _pool: Any) -> Any:
    return message.ToJsonString()


def _field_mask(message: Any, _pool: Any) -> str:
    return ",".join(_json_path(path) for path in message.paths)


@functools.lru_cache(maxsize=1024)
def _json_path(path: str) -> str:
    """Return one field mask path in lowerCamel case, as ``FieldMask.ToJsonString`` does.

    Raises:
        ValueError: the path has an upper-case letter or a ``_`` not before a lower-case one.
    """
    return field_mask_pb2.FieldMask(paths=[path]).ToJsonString()


def _wrapper(message: Any, _pool: Any) -> Any:
    field = message.DESCRIPTOR.fields_by_name["value"]
    return _scalar(field, message.value)


def _struct(message: Any, pool: Any) -> Any:
    return {key: _value(message.fields[key], pool) for key in sorted(message.fields)}


def _list_value(message: Any, pool: Any) -> Any:
    return [_value(item, pool) for item in message.values]


def _value(message: Any, pool: Any) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "number_value":
        return double_value(message.number_value)
    if kind == "string_value":
        return message.string_value
    if kind == "bool_value":
        return message.bool_value
    if kind == "struct_value":
        return _struct(message.struct_value, pool)
    if kind == "list_value":
        return _list_value(message.list_value, pool)
    # null_value, and a Value with no kind set (Go's protojson fails on that one).
    return None


def _empty(_message: Message, _pool: Any) -> Any:
    return {}


def _any(message: Any, pool: Any) -> Any:
    type_url = message.type_url
    descriptor = _find_type(type_url, pool)
    inner = message_factory.GetMessageClass(descriptor)()
    try:
        inner.ParseFromString(message.value)
    except DecodeError as error:
        raise MarshalError(f"Any of type {type_url} does not parse: {error}") from None
    value = message_to_value(inner, pool)
    if descriptor.full_name in _WELL_KNOWN:
        return {"@type": type_url, "value": value}
    return {"@type": type_url, **value}


def _find_type(type_url: str, pool: Any) -> Descriptor:
    name = type_url.rpartition("/")[2]
    for candidate in (pool, descriptor_pool.Default()):
        if candidate is None:
            continue
        try:
            return candidate.FindMessageTypeByName(name)
        except KeyError:
            continue
    raise MarshalError(f"cannot print an Any of unknown type {type_url}")


_WELL_KNOWN: dict[str, Callable[[Any, Any], Any]] = {
    "google.protobuf.Timestamp": _json_string,
    "google.protobuf.Duration": _json_string,
    "google.protobuf.FieldMask": _field_mask,
    "google.protobuf.Struct": _struct,
    "google.protobuf.ListValue": _list_value,
    "google.protobuf.Value": _value,
    "google.protobuf.Empty": _empty,
    _ANY: _any,
    **{
        f"google.protobuf.{name}": _wrapper
        for name in (
            "DoubleValue",
            "FloatValue",
            "Int64Value",
            "UInt64Value",
            "Int32Value",
            "UInt32Value",
            "BoolValue",
            "StringValue",
            "BytesValue",
        )
    },
}
