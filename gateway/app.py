"""The gateway's ASGI application: HTTP/JSON in, gRPC to the services, HTTP/JSON out.

Routes come only from the ``google.api.http`` annotations (see ``gateway.bindings``).
Responses the gateway sends without calling a service, each with a ``google.rpc.Status``
JSON body:

- unknown path: 404 NOT_FOUND; known path with another method: 501 UNIMPLEMENTED with
  the message "Method Not Allowed", as grpc-gateway v2's default routing error handler;
- malformed JSON, wrong value types, bad path or query values, a bad ``Grpc-Timeout``:
  400 INVALID_ARGUMENT naming the problem, without calling the service;
- a body over ``max_body_bytes``: 413 with RESOURCE_EXHAUSTED. grpc-gateway itself has no
  body limit; 413 is the status HTTP clients and proxies know for it, and
  RESOURCE_EXHAUSTED is what gRPC reports for an oversized message;
- more than ``max_concurrent_requests`` requests in flight: 429 RESOURCE_EXHAUSTED at once.

``GET /healthz`` returns 200 ``{"status": "SERVING"}``, or 503 ``{"status": "NOT_SERVING"}``
once ``start_draining`` was called; it is not counted against the concurrency limit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from gateway.bindings import Binding, load_bindings
from gateway.config import GatewayConfig
from gateway.errors import (
    GatewayError,
    error_headers,
    http_status_from_code,
    invalid_argument,
    status_from_rpc_error,
    status_json,
)
from gateway.marshal import CONTENT_TYPE, dumps, message_to_value, response_value
from gateway.metadata import (
    Metadata,
    accepts_trailers,
    parse_grpc_timeout,
    request_metadata,
    response_headers,
    trailer_fields,
)
from gateway.request import RequestError, build_request
from gateway.routes import LookupStatus, Route, Router
from gateway.upstream import Upstream

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[str, str]]

HEALTH_PATH = "/healthz"
_TRAILERS_EXTENSION = "http.response.trailers"


class GatewayApp:
    """ASGI application serving every binding over one upstream channel."""

    def __init__(
        self,
        config: GatewayConfig,
        bindings: Sequence[Binding] | None = None,
        upstream: Upstream | None = None,
    ) -> None:
        self.config = config
        self.bindings = list(load_bindings() if bindings is None else bindings)
        self.router: Router[Binding] = Router(
            Route(b.http_method, b.template, b) for b in self.bindings
        )
        self.upstream = upstream or Upstream(config.upstream_grpc)
        self.draining = False
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    def start_draining(self) -> None:
        """Make ``/healthz`` return 503 so the load balancer stops sending new requests."""
        if not self.draining:
            self.draining = True
            logger.info(
                "draining: /healthz now returns 503 (%s requests in flight)", self.in_flight
            )

    async def close(self) -> None:
        """Close the upstream channel; called once the HTTP server stopped."""
        await self.upstream.close(grace_s=self.config.shutdown_grace_s)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                self.upstream.open()
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == HEALTH_PATH and scope["method"] in ("GET", "HEAD"):
            await self._health(send)
            return
        if self.in_flight >= self.config.max_concurrent_requests:
            limit = self.config.max_concurrent_requests
            error = GatewayError(
                code_pb2.RESOURCE_EXHAUSTED,
                f"too many concurrent requests: this gateway handles at most {limit} at once",
            )
            await _send_body(send, error.status_code, dumps(status_json(error.to_status())), [])
            return
        self.in_flight += 1
        try:
            await _Exchange(self, scope, receive, send).run()
        finally:
            self.in_flight -= 1

    async def _health(self, send: Send) -> None:
        status, text = (503, "NOT_SERVING") if self.draining else (200, "SERVING")
        await _send_body(send, status, dumps({"status": text}), [])


class _Exchange:
    """One HTTP request routed to one gRPC call."""

    def __init__(self, app: GatewayApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers: Headers = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in scope.get("headers", [])
        ]
        self.with_trailers = accepts_trailers(self.headers)
        self.started = False

    async def run(self) -> None:
        try:
            await self._route()
        except GatewayError as error:
            await self._fail(error.to_status(), error.status_code, [], [])
        except RequestError as error:
            await self._fail(invalid_argument(str(error)).to_status(), 400, [], [])
        except grpc.aio.AioRpcError as error:
            await self._fail_rpc(error)
        except Exception:
            logger.exception(
                "unexpected error serving %s %s", self.scope["method"], self.scope["path"]
            )
            status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
            await self._fail(status, 500, [], [])

    async def _route(self) -> None:
        match = self.app.router.lookup(self.scope["method"], self.scope["path"])
        if match.status is LookupStatus.NOT_FOUND:
            raise GatewayError(code_pb2.NOT_FOUND, "Not Found")
        if match.status is LookupStatus.METHOD_NOT_ALLOWED:
            raise GatewayError(code_pb2.UNIMPLEMENTED, "Method Not Allowed")
        assert match.route is not None
        binding = match.route.target
        if binding.client_streaming:
            # NOTE: client-streaming and bidirectional rpcs are not served over HTTP yet.
            raise GatewayError(
                code_pb2.UNIMPLEMENTED,
                f"{binding.method.full_name} is client-streaming; the gateway serves only "
                "unary and server-streaming rpcs",
            )
        body = await self._read_body() if binding.body else b""
        query = self.scope.get("query_string", b"").decode("latin-1")
        request = build_request(binding, body, match.params, query)
        metadata = request_metadata(self.headers, _client_host(self.scope))
        timeout_s = self._timeout_s()
        if binding.server_streaming:
            await self._stream(binding, request, metadata, timeout_s)
        else:
            await self._unary(binding, request, metadata, timeout_s)

    def _timeout_s(self) -> float:
        for name, value in self.headers:
            if name == "grpc-timeout":
                return parse_grpc_timeout(value)
        return self.app.config.default_timeout_s

    async def _read_body(self) -> bytes:
        limit = self.app.config.max_body_bytes
        declared = dict(self.headers).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _body_too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self.receive()
            if event["type"] == "http.disconnect":
                break
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _body_too_large(limit)
            chunks.append(chunk)
            if not event.get("more_body", False):
                break
        return b"".join(chunks)

    async def _unary(
        self, binding: Binding, request: Message, metadata: Metadata, timeout_s: float
    ) -> None:
        result = await self.app.upstream.unary(binding, request, metadata, timeout_s)
        body = dumps(response_value(result.response, binding.response_body))
        headers = response_headers(result.header_metadata)
        trailers = trailer_fields(result.trailer_metadata) if self.with_trailers else []
        await self._respond(200, body, headers, trailers)

    async def _stream(
        self, binding: Binding, request: Message, metadata: Metadata, timeout_s: float
    ) -> None:
        """Write one ``{"result": ...}`` line per message and an ``{"error": ...}`` line on failure.

        As grpc-gateway's stream forwarder: a failure before the first message still sets
        the HTTP status from the gRPC code; after it, the status stays 200.
        """
        call = self.app.upstream.server_stream(binding, request, metadata, timeout_s)
        try:
            async for message in call:
                await self._start_stream(200, call)
                await self._write_line({"result": message_to_value(message)})
        except grpc.aio.AioRpcError as error:
            status = status_from_rpc_error(error)
            await self._start_stream(http_status_from_code(status.code), call)
            await self._write_line({"error": status_json(status)})
        await self._start_stream(200, call)
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _start_stream(self, status: int, call: Any) -> None:
        if not self.started:
            await self._start(status, response_headers(await call.initial_metadata() or ()))

    async def _write_line(self, value: Any) -> None:
        line = dumps(value) + b"\n"
        await self.send({"type": "http.response.body", "body": line, "more_body": True})

    async def _fail_rpc(self, error: grpc.aio.AioRpcError) -> None:
        status = status_from_rpc_error(error)
        headers = response_headers(error.initial_metadata() or ())
        trailers = trailer_fields(error.trailing_metadata() or ()) if self.with_trailers else []
        await self._fail(status, http_status_from_code(status.code), headers, trailers)

    async def _fail(
        self, status: status_pb2.Status, http_status: int, headers: Headers, trailers: Headers
    ) -> None:
        if self.started:
            logger.warning("cannot report status %s after the response started", status.code)
            return
        await self._respond(
            http_status, dumps(status_json(status)), headers + error_headers(status), trailers
        )

    async def _respond(self, status: int, body: bytes, headers: Headers, trailers: Headers) -> None:
        real_trailers = bool(trailers) and _TRAILERS_EXTENSION in self.scope.get("extensions", {})
        if trailers and not real_trailers:
            # The HTTP/1.1 server cannot send trailers; the body is complete, so send them early.
            headers = headers + trailers
        headers = [*headers, ("content-length", str(len(body)))]
        await self._start(status, headers, has_trailers=real_trailers)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
        if real_trailers:
            encoded = _encode(trailers)
            await self.send(
                {"type": "http.response.trailers", "headers": encoded, "more_trailers": False}
            )

    async def _start(self, status: int, headers: Headers, has_trailers: bool = False) -> None:
        self.started = True
        message: dict[str, Any] = {
            "type": "http.response.start",
            "status": status,
            "headers": _encode([("content-type", CONTENT_TYPE), *headers]),
        }
        if has_trailers:
            message["trailers"] = True
        await self.send(message)


def _body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        code_pb2.RESOURCE_EXHAUSTED,
        f"request body is larger than the limit of {limit} bytes",
        http_status=413,
    )


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _encode(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1", "replace")) for name, value in headers]


async def _send_body(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _encode(
                [("content-type", CONTENT_TYPE), ("content-length", str(len(body))), *headers]
            ),
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def create_app(config: GatewayConfig, bindings: Sequence[Binding] | None = None) -> GatewayApp:
    """Return the gateway ASGI application for ``config``.

    ``bindings`` defaults to every annotated rpc of the envios protos. The upstream
    channel opens on ASGI lifespan startup or on the first request; ``close()`` (or
    lifespan shutdown) closes it.
    """
    return GatewayApp(config, bindings)
