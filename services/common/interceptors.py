"""Building blocks of ``grpc.aio`` server interceptors, and the concurrency limit.

``wrap_handler`` runs an async context manager around the handler of any of the four
RPC types, so an interceptor states only what happens before and after a call.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, TypeAlias

import grpc

Context: TypeAlias = Any
"""A ``grpc.aio.ServicerContext``; grpcio ships no type hints."""

Around = Callable[[Context], AbstractAsyncContextManager[None]]
"""Builds the context manager that runs around one call of a handler."""

_KINDS = {
    (False, False): ("unary_unary", "unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", "server_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", "client_stream", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", "bidi_stream", grpc.stream_stream_rpc_method_handler),
}


def grpc_type(handler: grpc.RpcMethodHandler) -> str:
    """Return the RPC type of a handler: unary, server_stream, client_stream or bidi_stream."""
    return _KINDS[(bool(handler.request_streaming), bool(handler.response_streaming))][1]


def wrap_handler(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """Return a handler that runs ``around(context)`` around each call of ``handler``.

    Only coroutine and async generator behaviors are wrapped; a synchronous behavior (run
    by grpc in its thread pool) is returned unchanged.
    """
    attribute, _, build = _KINDS[
        (bool(handler.request_streaming), bool(handler.response_streaming))
    ]
    behavior = getattr(handler, attribute)
    if inspect.isasyncgenfunction(behavior):
        wrapped: Any = _wrap_generator(behavior, around)
    elif inspect.iscoroutinefunction(behavior):
        wrapped = _wrap_coroutine(behavior, around)
    else:
        return handler
    return build(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _wrap_coroutine(
    behavior: Callable[[Any, Context], Awaitable[Any]], around: Around
) -> Callable[[Any, Context], Awaitable[Any]]:
    async def wrapper(request: Any, context: Context) -> Any:
        async with around(context):
            return await behavior(request, context)

    return wrapper


def _wrap_generator(
    behavior: Callable[[Any, Context], AsyncIterator[Any]], around: Around
) -> Callable[[Any, Context], AsyncIterator[Any]]:
    async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
        async with around(context):
            async for response in behavior(request, context):
                yield response

    return wrapper


class ConcurrencyLimitInterceptor(grpc.aio.ServerInterceptor):
    """Reject an RPC with RESOURCE_EXHAUSTED when ``limit`` RPCs are already running.

    The rejection comes before any response message, so it travels in a "Trailers-Only"
    response that Envoy's retries (``resource-exhausted``) can see. Unlike grpc's own
    ``maximum_concurrent_rpcs``, this limit runs inside the interceptor chain, so an
    interceptor listed before it (the metrics one) counts the rejected RPCs.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self.active = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return wrap_handler(handler, lambda context: _Admission(self, context))


class _Admission:
    """Hold one of the limiter's slots for the length of a call."""

    def __init__(self, limiter: ConcurrencyLimitInterceptor, context: Context) -> None:
        self.limiter = limiter
        self.context = context

    async def __aenter__(self) -> None:
        if self.limiter.active >= self.limiter.limit:
            await self.context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many concurrent RPCs: this server handles at most {self.limiter.limit}"
                " at once",
            )
        self.limiter.active += 1

    async def __aexit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.limiter.active -= 1
