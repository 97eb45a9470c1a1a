"""One HTTP request routed to one gRPC call, with grpc-gateway v2's routing and responses.

Routing, as grpc-gateway's ``ServeMux``:

- a path that does not start with ``/``: 400 INVALID_ARGUMENT "Bad Request";
- no template matches: 404 NOT_FOUND "Not Found"; a template of another method matches:
  501 UNIMPLEMENTED "Method Not Allowed" (grpc-gateway's default routing error handler
  reports HTTP 405 as UNIMPLEMENTED, which maps back to 501);
- a POST with ``Content-Type: application/x-www-form-urlencoded`` (exactly) may carry
  ``X-HTTP-Method-Override``, which replaces the method, and when only a GET template
  matches it is served by that GET rpc; in both cases the form fields are read as query
  parameters, before those of the URL.

Errors the gateway finds itself (bad JSON, bad path or query values, a bad
``Grpc-Timeout`` or ``-Bin`` header) are 400 INVALID_ARGUMENT without a call. A body over
``max_body_bytes`` is 413 and a body not received within ``body_timeout_s`` is 408; both
carry a ``google.rpc.Status`` JSON body like every other error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import grpc
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry import trace

from gateway.bindings import Binding
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
from gateway.routes import ROUTE_SCOPE_KEY, LookupStatus
from gateway.tracing import http_server_span, name_route, record_response

if TYPE_CHECKING:
    from gateway.app import GatewayApp

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[str, str]]

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_TRAILERS_EXTENSION = "http.response.trailers"


class Exchange:
    """One HTTP request and its response."""

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
        self.pool: Any = None
        self.span: trace.Span | None = None

    async def run(self) -> None:
        """Serve the request; every failure becomes a ``google.rpc.Status`` JSON response."""
        with http_server_span(self.scope, self.headers) as self.span:
            await self._serve()

    async def _serve(self) -> None:
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

    def _path_segments(self, path: str) -> list[str]:
        """Split the path after its leading '/' into decoded segments.

        In ``legacy`` unescaping the server's decoded path is split, so ``%2F`` separates
        segments. In ``all-characters`` the raw path is split first and each segment is
        decoded on its own.

        Raises:
            GatewayError: INVALID_ARGUMENT when a segment does not decode to UTF-8.
        """
        raw = self.scope.get("raw_path")
        if self.app.config.path_unescaping == "legacy" or not raw:
            return path[1:].split("/")
        try:
            return [unquote(part, errors="strict") for part in raw.decode("ascii")[1:].split("/")]
        except UnicodeError:
            raise GatewayError(code_pb2.INVALID_ARGUMENT, "invalid URL escape in path") from None

    def header(self, name: str) -> str | None:
        """Return the first value of a lower-case header name, or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def _route(self) -> None:
        path = self.scope["path"]
        if not path.startswith("/"):
            raise GatewayError(code_pb2.INVALID_ARGUMENT, "Bad Request")
        method = self.scope["method"]
        query = self.scope.get("query_string", b"").decode("latin-1")
        form_post = method == "POST" and self.header("content-type") == FORM_CONTENT_TYPE
        override = self.header("x-http-method-override") if form_post else None
        if override:
            # The form body is read before routing, so the rpc gets an empty body.
            query = _join_query(await self._read_form(), query)
            method = override.upper()
            form_post = method == "POST"
        match = self.app.router.lookup_segments(method, self._path_segments(path))
        if match.status is LookupStatus.FOUND and match.route is not None:
            binding = match.route.target
            body = await self._read_body() if binding.body and not override else b""
            await self._call(binding, body, match.params, query)
        elif match.status is LookupStatus.METHOD_NOT_ALLOWED:
            if not (form_post and match.get_route is not None):
                raise GatewayError(code_pb2.UNIMPLEMENTED, "Method Not Allowed")
            query = _join_query(await self._read_form(), query)
            await self._call(match.get_route.target, b"", match.params, query)
        else:
            raise GatewayError(code_pb2.NOT_FOUND, "Not Found")

    async def _read_form(self) -> str:
        body = await self._read_body()
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_argument("form body is not valid UTF-8") from None

    async def _call(self, binding: Binding, body: bytes, params: Any, query: str) -> None:
        self.pool = binding.pool
        self.scope[ROUTE_SCOPE_KEY] = binding.template.source
        name_route(self.span, binding.http_method, binding.template.source)
        if binding.client_streaming:
            # NOTE: client-streaming and bidirectional rpcs are not served over HTTP yet.
            raise GatewayError(
                code_pb2.UNIMPLEMENTED,
                f"{binding.method.full_name} is client-streaming; the gateway serves only "
                "unary and server-streaming rpcs",
            )
        overrides = self.app.config.path_fields_in_query == "override"
        request = build_request(binding, body, params, query, query_overrides_path=overrides)
        metadata = request_metadata(self.headers, _client_host(self.scope))
        _add_idempotency_key(request, metadata)
        timeout_s = self._timeout_s()
        if binding.server_streaming:
            await self._stream(binding, request, metadata, timeout_s)
        else:
            await self._unary(binding, request, metadata, timeout_s)

    def _timeout_s(self) -> float:
        value = self.header("grpc-timeout")
        return self.app.config.default_timeout_s if value is None else parse_grpc_timeout(value)

    async def _read_body(self) -> bytes:
        timeout_s = self.app.config.body_timeout_s
        try:
            # asyncio.timeout, unlike wait_for, runs the read in this task: no task per body.
            async with asyncio.timeout(timeout_s):
                return await self._receive_body()
        except TimeoutError:
            raise GatewayError(
                code_pb2.DEADLINE_EXCEEDED,
                f"request body not received within {timeout_s} s",
                http_status=408,
            ) from None

    async def _receive_body(self) -> bytes:
        limit = self.app.config.max_body_bytes
        declared = self.header("content-length") or ""
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
        headers = response_headers(result.header_metadata)
        trailers = trailer_fields(result.trailer_metadata) if self.with_trailers else []
        if binding.http_body_response:
            content_type, body = _http_body(result.response, binding.response_body)
            headers.insert(0, ("content-type", content_type))
        else:
            body = dumps(response_value(result.response, binding.response_body, binding.pool))
        await self._respond(200, body, headers, trailers)

    async def _stream(
        self, binding: Binding, request: Message, metadata: Metadata, timeout_s: float
    ) -> None:
        """Write one ``{"result": ...}`` line per message and an ``{"error": ...}`` line on failure.

        As grpc-gateway's stream forwarder: a failure before the first message still sets
        the HTTP status from the gRPC code; after it, the status stays 200. An ``HttpBody``
        message is written as its raw data.
        """
        call = self.app.upstream.server_stream(binding, request, metadata, timeout_s)
        try:
            async for message in call:
                if binding.http_body_response:
                    content_type, data = _http_body(message, "")
                    await self._start_stream(200, call, content_type)
                    await self._write(data)
                else:
                    await self._start_stream(200, call)
                    await self._write(dumps({"result": message_to_value(message, binding.pool)}))
        except grpc.aio.AioRpcError as error:
            status = status_from_rpc_error(error)
            await self._start_stream(http_status_from_code(status.code), call)
            await self._write(dumps({"error": status_json(status, binding.pool)}))
        await self._start_stream(200, call)
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _start_stream(self, status: int, call: Any, content_type: str = CONTENT_TYPE) -> None:
        if not self.started:
            headers = response_headers(await call.initial_metadata() or ())
            await self._start(status, [("content-type", content_type), *headers])

    async def _write(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data + b"\n", "more_body": True})

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
        body = dumps(status_json(status, self.pool))
        await self._respond(http_status, body, headers + error_headers(status), trailers)

    async def _respond(self, status: int, body: bytes, headers: Headers, trailers: Headers) -> None:
        real_trailers = bool(trailers) and _TRAILERS_EXTENSION in self.scope.get("extensions", {})
        if trailers and not real_trailers:
            # The HTTP/1.1 server cannot send trailers; the body is complete, so send them early.
            headers = headers + trailers
        if not any(name == "content-type" for name, _ in headers):
            headers = [("content-type", CONTENT_TYPE), *headers]
        headers = [*headers, ("content-length", str(len(body)))]
        await self._start(status, headers, has_trailers=real_trailers)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
        if real_trailers:
            await self.send(
                {
                    "type": "http.response.trailers",
                    "headers": encode(trailers),
                    "more_trailers": False,
                }
            )

    async def _start(self, status: int, headers: Headers, has_trailers: bool = False) -> None:
        self.started = True
        record_response(self.span, status)
        message: dict[str, Any] = {
            "type": "http.response.start",
            "status": status,
            "headers": encode(headers),
        }
        if has_trailers:
            message["trailers"] = True
        await self.send(message)


def _join_query(form: str, query: str) -> str:
    """Form fields first, then the URL's, as Go's ``Request.Form`` orders them."""
    return f"{form}&{query}" if form and query else form or query


def _http_body(message: Any, response_body: str) -> tuple[str, bytes]:
    body = getattr(message, response_body) if response_body else message
    return body.content_type, body.data


def _body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        code_pb2.RESOURCE_EXHAUSTED,
        f"request body is larger than the limit of {limit} bytes",
        http_status=413,
    )


IDEMPOTENCY_KEY = "idempotency-key"
"""gRPC metadata that marks a write as carrying an idempotency key, so it may be retried
on another host or site (see ``ops/envoy_config.py``)."""


def _add_idempotency_key(request: Message, metadata: Metadata) -> None:
    """Send a non-empty top-level ``request_id`` (AIP-155) as the idempotency metadata."""
    field = request.DESCRIPTOR.fields_by_name.get("request_id")
    if field is None or field.type != field.TYPE_STRING:
        return
    value = next((value for set_field, value in request.ListFields() if set_field is field), "")
    # gRPC metadata values must be printable ASCII; a request id that is not is left to
    # the service, which rejects it with INVALID_ARGUMENT.
    printable = value.isascii() and value.isprintable()
    if value and printable and all(key != IDEMPOTENCY_KEY for key, _ in metadata):
        metadata.append((IDEMPOTENCY_KEY, value))


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def encode(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Encode header names and values for ASGI (Latin-1; other characters become '?')."""
    return [(name.encode("latin-1"), value.encode("latin-1", "replace")) for name, value in headers]
