"""Build the gRPC request message of a binding from the HTTP body, path and query.

The order follows grpc-gateway v2's generated handlers:

1. the JSON body goes into the whole request (``body: "*"``) or into one field;
2. for PATCH with a body field, an unset or empty ``FieldMask`` field (the request's only
   one) gets the paths of the body's keys;
3. path variables are set, overriding what the body set;
4. query parameters fill the fields that neither the body nor a path variable binds,
   except for ``body: "*"``, where the query string is ignored.

Query parameters follow grpc-gateway v2's default parser: a parameter whose only value is
empty is dropped; a parameter is skipped when a path variable or the body field is a
prefix of its dotted name as written (proto or JSON names are not mixed); an unknown name
is ignored; ``name[key]=value`` sets a map entry; a singular field given twice, a second
member of a set oneof, an invalid ``%`` escape or a ``;`` separator is INVALID_ARGUMENT.

JSON decoding is protojson as grpc-gateway's default marshaler configures it: proto and
lowerCamel names both accepted and unknown fields discarded (``DiscardUnknown: true``).
Every problem raises ``RequestError``, which the gateway returns as INVALID_ARGUMENT (HTTP 400).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gateway.bindings import Binding
from gateway.fieldmask import FieldMaskError, field_mask_paths
from gateway.fields import (
    FieldValueError,
    descriptor_of,
    resolve_field_path,
    set_field,
)
from gateway.unmarshal import parse_dict

_FIELD_MASK = "google.protobuf.FieldMask"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_NO_BODY = object()


class RequestError(ValueError):
    """Raised when the HTTP request cannot be turned into the gRPC request message."""


def build_request(
    binding: Binding,
    body: bytes,
    path_params: Mapping[str, str],
    query_string: str,
    *,
    query_overrides_path: bool = False,
) -> Message:
    """Return the request message for ``binding``; see the module docstring for the rules.

    With ``query_overrides_path`` (Envoy's behaviour), a query parameter naming a field
    that a path variable set replaces the path value instead of being ignored.

    Raises:
        RequestError: malformed JSON, a value of the wrong type, a bad path variable or
            query parameter; the message names the field.
    """
    request = binding.request_class()
    if binding.body:
        value = decode_json(body)
        if value is not _NO_BODY:
            merge_body(request, binding.body, value)
        mask_field = patch_mask_field(binding)
        if mask_field is not None:
            _derive_field_mask(request, binding, mask_field, value)
    for field_path, text in path_params.items():
        _set_path_param(request, field_path, text)
    if binding.body != "*":
        bound = [] if query_overrides_path else [path.split(".") for path in path_params]
        if binding.body:
            bound.append([binding.body])
        apply_query(request, query_string, bound)
    return request


def decode_json(body: bytes) -> Any:
    """Decode a JSON body; an empty body returns the ``_NO_BODY`` marker.

    Duplicate keys and the non-standard constants NaN and Infinity are rejected, as
    protojson rejects them.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(f"request body is not valid UTF-8: {error}") from None
    if not text.strip():
        return _NO_BODY
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as error:
        raise RequestError(
            f"request body is not valid JSON: {error.msg} "
            f"at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise RequestError("request body is nested too deeply") from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RequestError(f"request body has the key {key!r} twice in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise RequestError(f"request body contains {name}, which is not valid JSON")


def merge_body(request: Message, body: str, value: Any) -> None:
    """Parse the decoded JSON ``value`` into the whole empty request or into its field ``body``."""
    descriptor = request.DESCRIPTOR
    if body == "*":
        _expect_object(value, descriptor.full_name)
        document = value
    else:
        field = descriptor.fields_by_name[body]
        if field.message_type is not None and not field.is_repeated and value is not None:
            _expect_object(value, field.message_type.full_name)
        document = {field.name: value}
    try:
        parse_dict(document, request)
    except json_format.ParseError as error:
        raise RequestError(f"invalid request body: {_tidy(str(error))}") from None


def _expect_object(value: Any, type_name: str) -> None:
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        raise RequestError(
            f"invalid request body: expected a JSON object for {type_name}, got {kind}"
        )


def _tidy(message: str) -> str:
    """Drop the field list and doubled full stops that json_format appends to its errors."""
    message = message.split("\n", 1)[0].strip()
    while message.endswith(".."):
        message = message[:-1]
    return message


def patch_mask_field(binding: Binding) -> FieldDescriptor | None:
    """Return the FieldMask field a PATCH binding fills from its body, if it has one.

    As in grpc-gateway's generator: only for PATCH with ``body`` naming one field, and only
    when the request has exactly one ``google.protobuf.FieldMask`` field.
    """
    if binding.http_method != "PATCH" or binding.body in ("", "*"):
        return None
    masks = [
        f
        for f in binding.request_descriptor.fields
        if f.message_type is not None
        and f.message_type.full_name == _FIELD_MASK
        and not f.is_repeated
    ]
    return masks[0] if len(masks) == 1 else None


def _derive_field_mask(
    request: Message, binding: Binding, mask_field: FieldDescriptor, value: Any
) -> None:
    mask = getattr(request, mask_field.name)
    if mask.paths:
        return
    body_message = binding.request_descriptor.fields_by_name[binding.body].message_type
    if body_message is None:
        return
    try:
        paths = [] if value is _NO_BODY else field_mask_paths(value, body_message)
    except FieldMaskError as error:
        raise RequestError(
            f"cannot derive {mask_field.name} from the request body: {error}"
        ) from None
    mask.SetInParent()
    mask.paths.extend(paths)


def _set_path_param(request: Message, field_path: str, text: str) -> None:
    fields = resolve_field_path(descriptor_of(request), field_path.split("."))
    if fields is None:
        raise RequestError(f"path parameter {field_path!r} is not a request field")
    try:
        set_field(request, fields, [text])
    except FieldValueError as error:
        raise RequestError(f"invalid path parameter {field_path!r}: {error}") from None


def apply_query(request: Message, query_string: str, bound: list[list[str]]) -> None:
    """Set fields from the query string, skipping parameters under a ``bound`` field path.

    Raises:
        RequestError: a malformed query string or a value its field cannot take.
    """
    for key, values in parse_query(query_string):
        names = key.split(".")
        if any(names[: len(prefix)] == prefix for prefix in bound):
            continue
        try:
            fields = resolve_field_path(descriptor_of(request), names)
            if fields is not None:
                set_field(request, fields, values)
        except FieldValueError as error:
            raise RequestError(f"invalid query parameter {key!r}: {error}") from None


def parse_query(query_string: str) -> list[tuple[str, list[str]]]:
    """Group query values by parameter in order; ``m[k]=v`` becomes ``("m", [k, v])``.

    Parameters whose only value is empty are dropped, as grpc-gateway drops them.

    Raises:
        RequestError: a ``;`` separator, an invalid ``%`` escape or invalid UTF-8.
    """
    if ";" in query_string:
        raise RequestError("invalid semicolon separator in query")
    if _BAD_ESCAPE.search(query_string):
        raise RequestError("invalid URL escape in query")
    grouped: dict[str, list[str]] = {}
    try:
        pairs = parse_qsl(query_string, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as error:
        raise RequestError(f"query string is not valid UTF-8: {error}") from None
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    result = []
    for key, values in grouped.items():
        if values == [""]:
            continue
        if key.endswith("]") and "[" in key:
            name, _, map_key = key[:-1].partition("[")
            result.append((name, [map_key, *values]))
        else:
            result.append((key, values))
    return result
