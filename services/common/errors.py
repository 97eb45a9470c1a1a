"""Domain errors and their one mapping to gRPC status codes.

Servicers and domain code raise the exceptions below. ``ErrorMappingInterceptor`` turns
them into a gRPC status with a ``google.rpc.ErrorInfo`` detail (and ``BadRequest`` field
violations for invalid input). Anything else becomes INTERNAL with a generic message and
one log line with the traceback.

Errors are sent before any response message, so the status travels in a "Trailers-Only"
response that Envoy's retries and outlier detection can see.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

logger = logging.getLogger(__name__)

DOMAIN = "envios.dev"
"""``ErrorInfo.domain`` of every error envios raises."""


class DomainError(Exception):
    """Base of the errors that map to a specific gRPC status code."""

    code = grpc.StatusCode.UNKNOWN
    reason = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[Any]:
        """Return the detail messages that go into ``google.rpc.Status.details``."""
        return [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        ]


class InvalidArgument(DomainError):
    """Malformed input; carries one violation per invalid field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        summary = "; ".join(f"{field}: {description}" for field, description in violations)
        super().__init__(f"invalid request: {summary}")
        self.violations = list(violations)

    def details(self) -> list[Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                for field, description in self.violations
            ]
        )
        return [*super().details(), bad_request]


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class Unavailable(DomainError):
    """A dependency the call needs is down; the caller may retry."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "DEPENDENCY_UNAVAILABLE"


def to_status(error: DomainError) -> grpc.Status:
    """Build the rich gRPC status of a domain error."""
    details = []
    for detail in error.details():
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


def internal_status() -> grpc.Status:
    status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
    return rpc_status.to_status(status)


Context: TypeAlias = Any
"""A ``grpc.aio.ServicerContext``; grpcio ships no type hints."""

Behavior = Callable[[Any, Context], Awaitable[Any]]


def _wrap_unary(behavior: Behavior, method: str) -> Behavior:
    async def wrapper(request: Any, context: Context) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(error, context, method)

    return wrapper


def _wrap_stream(behavior: Callable[[Any, Context], AsyncIterator[Any]], method: str) -> Any:
    async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(error, context, method)

    return wrapper


async def _abort(error: Exception, context: Context, method: str) -> None:
    """End the call with the error's status: the mapped one, or INTERNAL with a log line."""
    if isinstance(error, DomainError):
        await context.abort_with_status(to_status(error))
    logger.error("unexpected error in %s", method, exc_info=error)
    await context.abort_with_status(internal_status())


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Map domain exceptions raised by unary and server-streaming handlers to gRPC statuses.

    A streaming handler that fails after sending messages still gets its status, but in
    the trailers, where Envoy's retries and outlier detection cannot see it.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
