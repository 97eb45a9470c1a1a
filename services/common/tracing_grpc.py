"""gRPC spans for ``grpc.aio`` servers and channels, following the OpenTelemetry RPC conventions.

Span names are ``package.Service/Method``; attributes ``rpc.system`` (``grpc``),
``rpc.service``, ``rpc.method`` and ``rpc.grpc.status_code``. A server span is an error
only for the codes that mean a server fault (``SERVER_ERROR_CODES``). A client span is an
error for every code but OK.

These interceptors are envios's own, not ``opentelemetry-instrumentation-grpc``'s. Its
``grpc.aio`` server interceptor (0.66b2, checked with grpcio 1.85) keeps the trailing
metadata of an abort intact, but records ``rpc.grpc.status_code`` 0 and no error for a
call ended with ``context.abort_with_status``, which is how ``ErrorMappingInterceptor``
ends every failed call, INTERNAL included. These interceptors read the code from the
servicer context after the handler finished and never wrap the context, so the rich
status in the trailing metadata also reaches the client unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.common import tracing

SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Codes that mark a server span as an error; the others are the caller's fault or normal."""

_ENDING: set[asyncio.Task[None]] = set()
"""Tasks that end the spans of running streams; held here so they are not collected early."""

UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Methods that get no span: Envoy's health checks alone would flood the traces."""


def server_span_status(code: grpc.StatusCode) -> StatusCode:
    """Return the span status of a server span that ended with ``code``."""
    return StatusCode.ERROR if code in SERVER_ERROR_CODES else StatusCode.UNSET


def client_span_status(code: grpc.StatusCode) -> StatusCode:
    """Return the span status of a client span that ended with ``code``."""
    return StatusCode.UNSET if code == grpc.StatusCode.OK else StatusCode.ERROR


def rpc_attributes(method: str | bytes) -> dict[str, str]:
    """Return ``rpc.*`` attributes for a ``/package.Service/Method`` path."""
    path = method.decode() if isinstance(method, bytes) else method
    service, _, name = path.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def finish_span(span: trace.Span, code: grpc.StatusCode, *, server: bool) -> None:
    """Set ``rpc.grpc.status_code`` and the span status for ``code``; does not end the span."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    status = server_span_status(code) if server else client_span_status(code)
    if status is StatusCode.ERROR:
        span.set_status(Status(status, code.name))


def _status_code(value: Any) -> grpc.StatusCode:
    """Convert what ``ServicerContext.code()`` returns (enum, int or None) to a status code."""
    if isinstance(value, grpc.StatusCode):
        return value
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.OK


def server_interceptors(provider: trace.TracerProvider | None = None) -> list[Any]:
    """Return the tracing server interceptor, or none when tracing is off and no
    ``provider`` is given. Put it first, so that its span covers the other interceptors."""
    if provider is None and not tracing.enabled():
        return []
    return [TracingServerInterceptor(provider)]


def client_interceptors(provider: trace.TracerProvider | None = None) -> list[Any]:
    """Return the tracing channel interceptors, or none when tracing is off and no
    ``provider`` is given."""
    if provider is None and not tracing.enabled():
        return []
    tracer = tracing.tracer(provider)
    return [_UnaryUnaryTracing(tracer), _UnaryStreamTracing(tracer)]


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """Give every unary and server-streaming call a SERVER span, child of the caller's."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._tracer = tracing.tracer(provider)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(UNTRACED_PREFIXES):
            return handler
        if inspect.iscoroutinefunction(handler.unary_unary):
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, details),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, details),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _start(self, details: grpc.HandlerCallDetails) -> trace.Span:
        return self._tracer.start_span(
            details.method.lstrip("/"),
            context=tracing.extract_pairs(details.invocation_metadata),
            kind=SpanKind.SERVER,
            attributes=rpc_attributes(details.method),
        )

    def _unary(self, behavior: Any, details: grpc.HandlerCallDetails) -> Any:
        async def traced(request: Any, context: Any) -> Any:
            span = self._start(details)
            with trace.use_span(
                span, end_on_exit=True, record_exception=False, set_status_on_exception=False
            ):
                try:
                    response = await behavior(request, context)
                except grpc.aio.AbortError:
                    finish_span(span, _status_code(context.code()), server=True)
                    raise
                except BaseException:
                    finish_span(span, grpc.StatusCode.UNKNOWN, server=True)
                    raise
                finish_span(span, _status_code(context.code()), server=True)
                return response

        return traced

    def _stream(self, behavior: Any, details: grpc.HandlerCallDetails) -> Any:
        async def traced(request: Any, context: Any) -> AsyncIterator[Any]:
            span = self._start(details)
            with trace.use_span(
                span, end_on_exit=True, record_exception=False, set_status_on_exception=False
            ):
                try:
                    async for response in behavior(request, context):
                        yield response
                except grpc.aio.AbortError:
                    finish_span(span, _status_code(context.code()), server=True)
                    raise
                except asyncio.CancelledError:
                    finish_span(span, grpc.StatusCode.CANCELLED, server=True)
                    raise
                except BaseException:
                    finish_span(span, grpc.StatusCode.UNKNOWN, server=True)
                    raise
                finish_span(span, _status_code(context.code()), server=True)

        return traced


class _ClientTracing:
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def _start(self, details: Any) -> tuple[trace.Span, Any]:
        """Start a CLIENT span; return it and the call details carrying its context."""
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        span = self._tracer.start_span(
            method.lstrip("/"), kind=SpanKind.CLIENT, attributes=rpc_attributes(method)
        )
        metadata = tracing.inject_pairs(details.metadata or (), trace.set_span_in_context(span))
        return span, details._replace(metadata=grpc.aio.Metadata(*metadata))


class _UnaryUnaryTracing(_ClientTracing, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        span, details = self._start(client_call_details)
        try:
            call = await continuation(details, request)
            code = await call.code()
        except BaseException:
            finish_span(span, grpc.StatusCode.UNKNOWN, server=False)
            span.end()
            raise
        finish_span(span, code, server=False)
        span.end()
        return call


class _UnaryStreamTracing(_ClientTracing, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        span, details = self._start(client_call_details)
        try:
            call = await continuation(details, request)
        except BaseException:
            finish_span(span, grpc.StatusCode.UNKNOWN, server=False)
            span.end()
            raise
        # The stream ends after this method returns, so a task ends the span with it.
        ending = asyncio.ensure_future(_end_with_call(span, call))
        _ENDING.add(ending)
        ending.add_done_callback(_ENDING.discard)
        return call


async def _end_with_call(span: trace.Span, call: Any) -> None:
    try:
        code = await call.code()
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
    finish_span(span, code, server=False)
    span.end()
