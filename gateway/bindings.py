"""HTTP bindings read from the ``google.api.http`` options of compiled descriptors.

Every annotated rpc of every selected service becomes one binding per rule (the main rule
and each of its ``additional_bindings``), so adding an annotated rpc needs no gateway code.
The services come from a ``gateway.descriptors.DescriptorSource``: the generated envios
modules by default, or any descriptor set file.

As grpc-gateway's generator does, a rule is rejected at start-up when its template breaks
the grammar, a path variable names no singular request field, ``body`` or
``response_body`` names no field, or a GET rule has a body.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from gateway.descriptors import DescriptorSource, default_source
from gateway.routes import PathTemplate, TemplateError, parse_template

logger = logging.getLogger(__name__)

DEFAULT_PACKAGES = ("envios",)
"""Proto package prefixes the gateway serves by default."""

_METHOD_FIELDS = ("get", "put", "post", "delete", "patch")
HTTP_BODY = "google.api.HttpBody"


class BindingError(ValueError):
    """Raised when an ``google.api.http`` rule cannot be served (bad template or field)."""


@dataclass(frozen=True)
class Binding:
    """One HTTP rule of one rpc."""

    http_method: str
    """Upper-case HTTP method, for example ``PATCH``."""
    template: PathTemplate
    body: str
    """``""`` (no body), ``"*"`` (the whole request) or a top-level request field name."""
    response_body: str
    """``""`` (the whole response) or a top-level response field name."""
    method: MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]

    @property
    def grpc_path(self) -> str:
        """Path of the gRPC call, ``/package.Service/Method``."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request_descriptor(self) -> Descriptor:
        return self.method.input_type

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def pool(self) -> descriptor_pool.DescriptorPool:
        """The pool of the rpc's file; ``Any`` values resolve their types in it."""
        return self.method.containing_service.file.pool

    @property
    def http_body_response(self) -> bool:
        """True when the response (or its ``response_body`` field) is a ``google.api.HttpBody``."""
        output: Descriptor | None = self.method.output_type
        if self.response_body and output is not None:
            output = output.fields_by_name[self.response_body].message_type
        return output is not None and output.full_name == HTTP_BODY

    @property
    def describe(self) -> str:
        """One route table line: ``GET /v1/x/{id} -> pkg.Service.Method``."""
        return f"{self.http_method} {self.template.source} -> {self.method.full_name}"


def import_generated_modules(package: str) -> list[Any]:
    """Import every ``*_pb2`` module below a Python package so its descriptors register.

    Raises:
        ImportError: the package or one of its modules cannot be imported.
    """
    root = importlib.import_module(package)
    modules = [root]
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        if info.name.endswith("_pb2"):
            modules.append(importlib.import_module(info.name))
    return modules


def load_bindings(packages: Sequence[str] = DEFAULT_PACKAGES) -> list[Binding]:
    """Return the bindings of every service whose proto package starts with one of ``packages``.

    Each entry of ``packages`` is also imported as a Python package to register its
    generated modules.

    Raises:
        BindingError: an rpc's rule cannot be served.
    """
    source = default_source(packages)
    services = [
        service
        for file in source.files
        if any(_in_package(file.package, p) for p in packages)
        for service in file.services_by_name.values()
    ]
    bindings = bindings_for_services(services)
    logger.debug("loaded %s HTTP bindings from %s", len(bindings), ", ".join(packages))
    return bindings


def load_source_bindings(source: DescriptorSource, services: Sequence[str] = ()) -> list[Binding]:
    """Return the bindings of the services of ``source`` (all of them when ``services`` is empty).

    Raises:
        BindingError: an rpc's rule cannot be served.
        DescriptorSetError: a name in ``services`` is not in the source.
    """
    return bindings_for_services(source.services(services))


def bindings_for_services(services: Iterable[ServiceDescriptor]) -> list[Binding]:
    """Return the bindings of every annotated rpc of ``services``, in declaration order."""
    bindings = []
    for service in services:
        for method in service.methods:
            bindings.extend(bindings_for_method(method))
    return bindings


def _in_package(proto_package: str, prefix: str) -> bool:
    return proto_package == prefix or proto_package.startswith(prefix + ".")


def bindings_for_method(method: MethodDescriptor) -> list[Binding]:
    """Return the bindings of one rpc: its rule plus ``additional_bindings`` (one level)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    rules: Iterable[http_pb2.HttpRule] = [rule, *rule.additional_bindings]
    return [_binding(method, r) for r in rules]


def _binding(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Binding:
    http_method, path = _method_and_path(method, rule)
    try:
        template = parse_template(path)
    except TemplateError as error:
        raise BindingError(f"rpc {method.full_name}: {error}") from error
    if http_method == "GET" and rule.body:
        raise BindingError(
            f"rpc {method.full_name}: GET {path!r} has body {rule.body!r}; GET rules take no body"
        )
    _check_body_field(method, method.input_type, rule.body, "body")
    _check_body_field(method, method.output_type, rule.response_body, "response_body")
    for variable in template.variables:
        _check_field_path(method, template.source, variable.field_path)
    return Binding(
        http_method=http_method,
        template=template,
        body=rule.body,
        response_body=rule.response_body,
        method=method,
        request_class=message_factory.GetMessageClass(method.input_type),
        response_class=message_factory.GetMessageClass(method.output_type),
    )


def _method_and_path(method: MethodDescriptor, rule: http_pb2.HttpRule) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    if pattern in _METHOD_FIELDS:
        return pattern.upper(), str(getattr(rule, pattern))
    if pattern == "custom":
        # HTTP methods are case-sensitive; grpc-gateway registers the kind as written.
        return rule.custom.kind, rule.custom.path
    raise BindingError(f"rpc {method.full_name}: google.api.http rule has no method and path")


def _check_body_field(
    method: MethodDescriptor, message: Descriptor, name: str, option: str
) -> None:
    allowed = ("", "*") if option == "body" else ("",)
    if name not in allowed and name not in message.fields_by_name:
        raise BindingError(
            f"rpc {method.full_name}: {option} {name!r} is not a field of {message.full_name}"
        )


def _check_field_path(method: MethodDescriptor, template: str, field_path: str) -> None:
    """Check that a path variable names a singular field through singular messages."""
    message: Descriptor | None = method.input_type
    field: FieldDescriptor | None = None
    for name in field_path.split("."):
        if message is None or name not in message.fields_by_name:
            raise BindingError(
                f"rpc {method.full_name}: path template {template!r}: variable "
                f"{field_path!r} is not a field of {method.input_type.full_name}"
            )
        field = message.fields_by_name[name]
        message = field.message_type
    if field is not None and field.is_repeated:
        raise BindingError(
            f"rpc {method.full_name}: path template {template!r}: variable {field_path!r} "
            "is a repeated field"
        )
