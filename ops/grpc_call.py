"""``envios call``: call any gRPC method of the stack with JSON, using server reflection.

The client needs no generated code: it requests the method's descriptors from the server
(``grpc.reflection``), builds the request from JSON with protojson rules, and prints the
response as JSON. By default it goes through Envoy's gRPC listener, like internal callers.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2  # noqa: F401  (registers ErrorInfo, BadRequest for JSON)
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

DEFAULT_TIMEOUT_S = 30.0


class CallError(Exception):
    """The method could not be resolved or the request could not be built."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``envios call`` to ``parser``."""
    parser.add_argument(
        "method",
        nargs="?",
        help="full method name, e.g. envios.shipment.v1.ShipmentService/GetShipment;"
        " omit it to list the services",
    )
    parser.add_argument("request", nargs="?", default="{}", help="request as JSON (default {})")
    parser.add_argument("--target", help="host:port to call (default: Envoy's gRPC listener)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline of the call in seconds"
    )


def resolve(channel: grpc.Channel, name: str) -> MethodDescriptor:
    """Find a method by ``package.Service/Method`` (or ``package.Service.Method``) name.

    Raises:
        CallError: the service or the method is unknown to the server.
    """
    service_name, _, method_name = name.replace("/", ".").rpartition(".")
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    try:
        service = pool.FindServiceByName(service_name)
    except KeyError as error:
        raise CallError(f"service {service_name!r} is not known to the server") from error
    method = service.methods_by_name.get(method_name)
    if method is None:
        known = ", ".join(sorted(service.methods_by_name))
        raise CallError(f"{service_name} has no method {method_name!r}; methods: {known}")
    return method


def call(
    channel: grpc.Channel, method: MethodDescriptor, request_json: str, timeout_s: float
) -> str:
    """Send one unary call and return the response as protojson text.

    Raises:
        CallError: the JSON does not fit the request message.
        grpc.RpcError: the call failed.
    """
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    try:
        request = json_format.Parse(request_json, request_class())
    except json_format.ParseError as error:
        raise CallError(f"invalid request for {method.input_type.full_name}: {error}") from error
    stub = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    response = stub(request, timeout=timeout_s)
    return json_format.MessageToJson(response, always_print_fields_with_no_presence=True)


def list_services(channel: grpc.Channel) -> list[str]:
    """Return the service names the server lists through reflection."""
    database = ProtoReflectionDescriptorDatabase(channel)
    return sorted(database.get_services())


def run(args: argparse.Namespace, target: str) -> int:
    """Run ``envios call``; 0 on success, 1 when the call failed, 2 on bad input."""
    with grpc.insecure_channel(target) as channel:
        try:
            if args.method is None:
                print("\n".join(list_services(channel)))
                return 0
            method = resolve(channel, args.method)
            print(call(channel, method, args.request, args.timeout))
        except CallError as error:
            print(f"envios call: {error}", file=sys.stderr)
            return 2
        except grpc.RpcError as error:
            print(json.dumps(_describe(error), indent=2), file=sys.stderr)
            return 1
    return 0


def _describe(error: Any) -> dict[str, Any]:
    """Return the code, message and rich details (ErrorInfo, BadRequest) of a failed call."""
    described: dict[str, Any] = {"code": error.code().name, "message": error.details()}
    status = rpc_status.from_call(error)
    if status is not None and status.details:
        described["details"] = [json_format.MessageToDict(detail) for detail in status.details]
    return described
