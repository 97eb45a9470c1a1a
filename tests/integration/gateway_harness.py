"""Harness for comparing the gateway with Envoy's gRPC-JSON transcoder.

- ``compile_test_protos(directory)`` compiles ``tests/protos/facadetest/v1/facade.proto`` into
  a ``FileDescriptorSet`` with its imports (the same input both transcoders take);
- ``EchoBackend`` serves every rpc of a descriptor source generically: most rpcs return
  their request, so the JSON response shows the request that each transcoder built;
- ``TranscoderEnvoy`` runs a real Envoy whose only HTTP filter before the router is
  ``envoy.filters.http.grpc_json_transcoder`` on that descriptor set.

The benchmark ``benchmarks/gateway_vs_envoy.py`` uses the same pieces.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import any_pb2, message_factory, struct_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from google.rpc import status_pb2 as rpc_status_pb2
from grpc_status import rpc_status
from grpc_tools import protoc

from gateway.descriptors import DescriptorSource, read_descriptor_set
from ops.codegen import googleapis_root
from ops.topology import HOST, free_ports
from tests.integration.envoy_harness import EnvoyRunner

TEST_PROTOS = Path(__file__).resolve().parent.parent / "protos"
TEST_PROTO = "facadetest/v1/facade.proto"
TEST_SERVICE = "facadetest.v1.FacadeTestService"
"""The service both transcoders serve."""
GATEWAY_ONLY_SERVICE = "facadetest.v1.GatewayOnlyService"
"""The service whose bindings Envoy refuses to load; only the gateway serves it."""
POLL_INTERVAL_S = 0.05


def compile_test_protos(directory: Path) -> Path:
    """Write the descriptor set of the test proto (with its imports) and return its path.

    Raises:
        RuntimeError: protoc failed; its messages are on stderr.
    """
    output = directory / "facadetest.binpb"
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    args = [
        "grpc_tools.protoc",
        f"--proto_path={TEST_PROTOS}",
        f"--proto_path={googleapis_root()}",
        f"--proto_path={well_known}",
        "--include_imports",
        f"--descriptor_set_out={output}",
        TEST_PROTO,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {TEST_PROTO}")
    return output


def load_test_source(directory: Path) -> tuple[Path, DescriptorSource]:
    """Compile the test proto and load it into a private pool."""
    path = compile_test_protos(directory)
    return path, read_descriptor_set(path)


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout_s: float, description: str
) -> None:
    """Poll ``condition`` until it is true; raise ``TimeoutError`` naming ``description``."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {description}")
        await asyncio.sleep(POLL_INTERVAL_S)


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class EchoBackend:
    """A ``grpc.aio`` server implementing every rpc of both test services from descriptors.

    Every call sends the header metadata ``echo-method: <rpc name>`` and the trailer
    ``echo-trailer: done``. Besides returning the request, a few rpcs of the test proto
    act on it: ``Fail`` aborts with a rich status, ``EchoMetadata`` returns the metadata
    it received, ``ListItems`` makes items, ``StreamItems`` streams and ``GetRawBody``
    returns an ``HttpBody``.
    """

    def __init__(self, source: DescriptorSource) -> None:
        self.services = source.services([TEST_SERVICE, GATEWAY_ONLY_SERVICE])
        self.address = ""
        self._server: grpc.aio.Server | None = None

    async def start(self, address: str = f"{HOST}:0") -> str:
        server = grpc.aio.server()
        for service in self.services:
            handlers = {m.name: self._handler(m) for m in service.methods}
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service.full_name, handlers),)
            )
        port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        self.address = f"{HOST}:{port}"
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    def _handler(self, method: MethodDescriptor) -> Any:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        kwargs = {
            "request_deserializer": request_class.FromString,
            "response_serializer": _serialize,
        }
        if method.server_streaming:
            stream = self._stream_handler(method, response_class)
            return grpc.unary_stream_rpc_method_handler(stream, **kwargs)
        unary = self._unary_handler(method, response_class)
        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)

    def _unary_handler(self, method: MethodDescriptor, response_class: Any) -> Handler:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.send_initial_metadata((("echo-method", method.name),))
            context.set_trailing_metadata((("echo-trailer", "done"),))
            return await _respond(method, request, response_class, context)

        return handle

    def _stream_handler(self, method: MethodDescriptor, response_class: Any) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if request.fail_code and request.fail_after == 0:
                await _abort(context, request.fail_code, f"stream {request.id} failed")
            await context.send_initial_metadata((("echo-method", method.name),))
            for index in range(request.count):
                if request.fail_code and index == request.fail_after:
                    await _abort(context, request.fail_code, f"stream {request.id} failed")
                yield response_class(name=f"{request.id}-{index}", count=index)

        return handle


async def _respond(
    method: MethodDescriptor, request: Any, response_class: Any, context: grpc.aio.ServicerContext
) -> Any:
    name = method.name
    if name == "Fail":
        if request.code:
            await _abort(context, request.code, request.message or f"failed with {request.code}")
        return response_class(reason="NO_FAILURE", domain="facadetest")
    if name == "EchoMetadata":
        return _metadata_struct(context.invocation_metadata() or ())
    if name == "ListItems":
        items = [{"name": f"item-{i}", "count": i} for i in range(request.page_size)]
        return response_class(items=items, next_page_token=request.page_token)
    if name == "GetRawBody":
        return response_class(content_type=request.content_type, data=request.text.encode())
    if method.output_type is method.input_type:
        return request
    return response_class()


async def _abort(context: grpc.aio.ServicerContext, code: int, message: str) -> None:
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason="ECHO_FAILURE", domain="facadetest", metadata={"code": str(code)}
        )
    )
    violation = error_details_pb2.BadRequest.FieldViolation(field="code", description="as asked")
    bad_request = any_pb2.Any()
    bad_request.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    status = rpc_status_pb2.Status(code=code, message=message, details=[info, bad_request])
    await context.abort_with_status(rpc_status.to_status(status))


def _metadata_struct(metadata: Any) -> struct_pb2.Struct:
    grouped: dict[str, list[str]] = {}
    for key, value in metadata:
        text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
        grouped.setdefault(key, []).append(text)
    result = struct_pb2.Struct()
    result.update(grouped)
    return result


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def transcoder_config(
    descriptor_set: Path, backend: str, listen_port: int, admin_port: int
) -> dict[str, Any]:
    """Return an Envoy bootstrap: one listener with the transcoder in front of ``backend``.

    The transcoder options are the ones closest to grpc-gateway's defaults: zero values
    printed, gRPC errors as ``google.rpc.Status`` JSON, a colon in the last segment kept as
    path text when no rpc has that verb, ``+`` in the query read as a space, unknown query
    parameters ignored, and requests that match no rpc rejected instead of passed on.
    """
    host, _, port = backend.rpartition(":")
    transcoder = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3."
        "GrpcJsonTranscoder",
        "proto_descriptor": str(descriptor_set),
        "services": [TEST_SERVICE],
        "print_options": {
            "always_print_primitive_fields": True,
            "stream_newline_delimited": True,
        },
        "convert_grpc_status": True,
        "match_unregistered_custom_verb": True,
        "query_param_unescape_plus": True,
        "ignore_unknown_query_parameters": True,
        "url_unescape_spec": "ALL_CHARACTERS",
        "request_validation_options": {"reject_unknown_method": True},
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
        "v3.HttpConnectionManager",
        "stat_prefix": "transcoder",
        "codec_type": "AUTO",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": "backend", "timeout": "60s"},
                        }
                    ],
                }
            ]
        },
        "http_filters": [
            {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": transcoder},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    return {
        "admin": {"address": _socket(HOST, admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "transcoder",
                    "address": _socket(HOST, listen_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_backend_cluster(host, int(port))],
        },
    }


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _backend_cluster(host: str, port: int) -> dict[str, Any]:
    http2 = {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
    return {
        "name": "backend",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2
        },
        "load_assignment": {
            "cluster_name": "backend",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}}]}],
        },
    }


class TranscoderEnvoy(EnvoyRunner):
    """A real Envoy running ``transcoder_config``; ``url`` is its HTTP listener."""

    def __init__(self, descriptor_set: Path, backend: str, directory: Path) -> None:
        self.listen_port, self.admin_port = free_ports(2)
        super().__init__(
            directory / "transcoder.yaml",
            directory / "transcoder.log",
            f"http://{HOST}:{self.admin_port}",
        )
        self.url = f"http://{HOST}:{self.listen_port}"
        config = transcoder_config(descriptor_set, backend, self.listen_port, self.admin_port)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        self.launch()

    async def wait_ready(self, timeout_s: float = 20.0) -> None:
        await wait_for(self.ready, timeout_s, "the transcoding Envoy to become ready")
