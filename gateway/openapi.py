"""OpenAPI 3.0 document of the gateway's bindings, generated from the same descriptors.

It follows the conventions of grpc-gateway's ``protoc-gen-openapiv2`` where OpenAPI 3.0
can express them (that generator writes Swagger 2.0):

- one operation per binding, ``operationId`` ``<Service>_<Method>`` with a number appended
  for additional bindings, tagged with the service name;
- path variables as required path parameters (a multi-segment variable such as
  ``{name=shelves/*}`` becomes ``{name}`` with a ``pattern``);
- every request field that neither the path nor the body binds as a query parameter,
  nested message fields flattened with dots, repeated fields as repeated parameters;
  map fields and messages other than the well-known types are left out;
- the body as ``application/json`` (the whole request for ``body: "*"`` without the
  path-bound fields, or the schema of the body field);
- a ``200`` response with the response (or its ``response_body`` field) and a
  ``default`` response with ``google.rpc.Status``;
- schemas named by the message's full name, properties under their JSON names. Unset
  message fields are printed as ``null``, so message-typed properties are nullable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.bindings import Binding
from gateway.routes import SegmentKind

_F = FieldDescriptor
STATUS_SCHEMA = "google.rpc.Status"
_INT32 = {_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32}
_UINT32 = {_F.TYPE_UINT32, _F.TYPE_FIXED32}
_INT64 = {_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64}
_UINT64 = {_F.TYPE_UINT64, _F.TYPE_FIXED64}
_WRAPPED: dict[str, dict[str, Any]] = {
    "DoubleValue": {"type": "number", "format": "double"},
    "FloatValue": {"type": "number", "format": "float"},
    "Int64Value": {"type": "string", "format": "int64"},
    "UInt64Value": {"type": "string", "format": "uint64"},
    "Int32Value": {"type": "integer", "format": "int32"},
    "UInt32Value": {"type": "integer", "format": "int64", "minimum": 0},
    "BoolValue": {"type": "boolean"},
    "StringValue": {"type": "string"},
    "BytesValue": {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    **{f"google.protobuf.{name}": schema for name, schema in _WRAPPED.items()},
}


def openapi_document(bindings: Sequence[Binding], title: str = "envios HTTP API") -> dict[str, Any]:
    """Return the OpenAPI 3.0.3 document of ``bindings`` as a JSON value."""
    builder = _Builder()
    paths: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for binding in bindings:
        name = binding.method.full_name
        counts[name] = counts.get(name, 0) + 1
        path = _openapi_path(binding)
        operation = builder.operation(binding, counts[name])
        paths.setdefault(path, {})[binding.http_method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "v1"},
        "paths": paths,
        "components": {"schemas": builder.schemas},
    }


def _openapi_path(binding: Binding) -> str:
    template = binding.template
    parts: list[str] = []
    variables = {v.start: v for v in template.variables}
    index = 0
    while index < len(template.segments):
        variable = variables.get(index)
        if variable is not None:
            parts.append("{" + variable.field_path + "}")
            index = variable.end
            continue
        segment = template.segments[index]
        parts.append(segment.text if segment.kind is SegmentKind.LITERAL else "*")
        index += 1
    path = "/" + "/".join(parts)
    return f"{path}:{template.verb}" if template.verb else path


def _variable_pattern(binding: Binding, start: int, end: int) -> str | None:
    segments = binding.template.segments[start:end]
    if len(segments) == 1 and segments[0].kind is SegmentKind.WILDCARD:
        return None
    pieces = []
    for segment in segments:
        if segment.kind is SegmentKind.LITERAL:
            pieces.append(segment.text)
        elif segment.kind is SegmentKind.WILDCARD:
            pieces.append("[^/]+")
        else:
            pieces.append(".*")
    return "^" + "/".join(pieces) + "$"


class _Builder:
    """Collects the schemas that operations refer to."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self._status_schema()

    def operation(self, binding: Binding, number: int) -> dict[str, Any]:
        service = binding.method.containing_service
        suffix = "" if number == 1 else str(number)
        operation: dict[str, Any] = {
            "operationId": f"{service.name}_{binding.method.name}{suffix}",
            "tags": [service.name],
            "parameters": self._path_parameters(binding) + self._query_parameters(binding),
            "responses": {
                "200": {
                    "description": "A successful response.",
                    "content": {"application/json": {"schema": self._response_schema(binding)}},
                },
                "default": {
                    "description": "An error, as a google.rpc.Status.",
                    "content": {"application/json": {"schema": _ref(STATUS_SCHEMA)}},
                },
            },
        }
        if binding.body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self._body_schema(binding)}},
            }
        return operation

    def _path_parameters(self, binding: Binding) -> list[dict[str, Any]]:
        parameters = []
        for variable in binding.template.variables:
            field = _resolve(binding.request_descriptor, variable.field_path)
            schema = self.field_schema(field, nullable=False) if field else {"type": "string"}
            pattern = _variable_pattern(binding, variable.start, variable.end)
            if pattern is not None:
                schema = {"type": "string", "pattern": pattern}
            parameters.append(
                {"name": variable.field_path, "in": "path", "required": True, "schema": schema}
            )
        return parameters

    def _query_parameters(self, binding: Binding) -> list[dict[str, Any]]:
        if binding.body == "*":
            return []
        bound = {v.field_path for v in binding.template.variables}
        if binding.body:
            bound.add(binding.body)
        parameters: list[dict[str, Any]] = []
        self._flatten(binding.request_descriptor, "", bound, parameters, set())
        return parameters

    def _flatten(
        self,
        message: Descriptor,
        prefix: str,
        bound: set[str],
        parameters: list[dict[str, Any]],
        seen: set[str],
    ) -> None:
        if message.full_name in seen:
            return
        for field in message.fields:
            path = prefix + field.name
            if path in bound or _is_map(field):
                continue
            nested = field.message_type
            if nested is not None and nested.full_name not in _WELL_KNOWN:
                if not field.is_repeated:
                    self._flatten(nested, path + ".", bound, parameters, seen | {message.full_name})
                continue
            if nested is not None and nested.full_name in (
                "google.protobuf.Value",
                "google.protobuf.ListValue",
                "google.protobuf.Any",
                "google.protobuf.Empty",
            ):
                continue
            parameters.append(self._query_parameter(field, path))

    def _query_parameter(self, field: FieldDescriptor, path: str) -> dict[str, Any]:
        schema = self.field_schema(field, nullable=False)
        if field.message_type is not None and field.message_type.full_name == (
            "google.protobuf.Struct"
        ):
            schema = {"type": "string", "description": "A JSON object."}
        parameter: dict[str, Any] = {"name": path, "in": "query", "required": False}
        if field.is_repeated:
            parameter.update(style="form", explode=True)
        parameter["schema"] = schema
        return parameter

    def _body_schema(self, binding: Binding) -> dict[str, Any]:
        request = binding.request_descriptor
        if binding.body != "*":
            return self.field_schema(request.fields_by_name[binding.body], nullable=False)
        top_level = {v.field_path for v in binding.template.variables if "." not in v.field_path}
        schema = self._object_schema(request)
        properties = schema["properties"]
        for field in request.fields:
            if field.name in top_level:
                properties.pop(field.json_name, None)
        return schema

    def _response_schema(self, binding: Binding) -> dict[str, Any]:
        response = binding.method.output_type
        if binding.response_body:
            schema = self.field_schema(response.fields_by_name[binding.response_body])
        else:
            schema = self.message_schema(response, nullable=False)
        if binding.server_streaming:
            return {
                "type": "object",
                "properties": {"result": schema, "error": _ref(STATUS_SCHEMA)},
            }
        return schema

    def field_schema(self, field: FieldDescriptor, nullable: bool = True) -> dict[str, Any]:
        if _is_map(field):
            entry = field.message_type
            assert entry is not None
            value = self.field_schema(entry.fields_by_name["value"], nullable=True)
            return {"type": "object", "additionalProperties": value}
        single = self._single_schema(field, nullable)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single_schema(self, field: FieldDescriptor, nullable: bool) -> dict[str, Any]:
        if field.message_type is not None:
            return self.message_schema(field.message_type, nullable)
        if field.enum_type is not None:
            names = list(field.enum_type.values_by_name)
            return {"type": "string", "enum": names}
        return _scalar_schema(field.type)

    def message_schema(self, message: Descriptor, nullable: bool = True) -> dict[str, Any]:
        known = _WELL_KNOWN.get(message.full_name)
        if known is not None:
            schema = dict(known)
        else:
            if message.full_name not in self.schemas:
                self.schemas[message.full_name] = {}  # placeholder for recursive types
                self.schemas[message.full_name] = self._object_schema(message)
            schema = _ref(message.full_name)
        if nullable and schema:
            return (
                {"allOf": [schema], "nullable": True}
                if "$ref" in schema
                else {
                    **schema,
                    "nullable": True,
                }
            )
        return schema

    def _object_schema(self, message: Descriptor) -> dict[str, Any]:
        properties = {f.json_name: self.field_schema(f) for f in message.fields}
        return {"type": "object", "properties": properties}

    def _status_schema(self) -> None:
        self.schemas[STATUS_SCHEMA] = {
            "type": "object",
            "properties": {
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
            },
        }


def _scalar_schema(kind: int) -> dict[str, Any]:
    if kind in _INT32:
        return {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
    if kind in _UINT32:
        return {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1}
    if kind in _INT64:
        return {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
    if kind in _UINT64:
        return {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
    if kind == _F.TYPE_DOUBLE:
        return {"type": "number", "format": "double"}
    if kind == _F.TYPE_FLOAT:
        return {"type": "number", "format": "float"}
    if kind == _F.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == _F.TYPE_BYTES:
        return {"type": "string", "format": "byte"}
    return {"type": "string"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return bool(field.is_repeated and entry is not None and entry.GetOptions().map_entry)


def _resolve(message: Descriptor, field_path: str) -> FieldDescriptor | None:
    field = None
    current: Descriptor | None = message
    for name in field_path.split("."):
        if current is None or name not in current.fields_by_name:
            return None
        field = current.fields_by_name[name]
        current = field.message_type
    return field
