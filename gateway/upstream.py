"""The gateway's one gRPC channel to the services (Envoy's gRPC listener in production).

Calls are built from descriptors only: ``channel.unary_unary`` or ``unary_stream`` with
the binding's ``/package.Service/Method`` path and its message classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from gateway.bindings import Binding
from gateway.metadata import Metadata
from services.common.tracing_grpc import client_interceptors

logger = logging.getLogger(__name__)


@dataclass
class UnaryResult:
    """Outcome of a successful unary call."""

    response: Message
    header_metadata: list[tuple[str, str | bytes]] = field(default_factory=list)
    trailer_metadata: list[tuple[str, str | bytes]] = field(default_factory=list)


class Upstream:
    """A lazily opened ``grpc.aio`` channel plus one callable per gRPC method."""

    def __init__(self, target: str, options: list[tuple[str, Any]] | None = None) -> None:
        self.target = target
        self._options = options or []
        self._channel: grpc.aio.Channel | None = None
        self._callables: dict[str, Any] = {}

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel; created on first use because ``grpc.aio`` needs a running loop."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.target, options=self._options, interceptors=client_interceptors()
            )
            logger.info("opened gRPC channel to %s", self.target)
        return self._channel

    def open(self) -> None:
        """Create the channel now; it connects in the background."""
        _ = self.channel

    async def unary(
        self, binding: Binding, request: Message, metadata: Metadata, timeout_s: float
    ) -> UnaryResult:
        """Make a unary call.

        Raises:
            grpc.aio.AioRpcError: the call failed; its code, details and trailer carry
                the status.
        """
        call = self._callable(binding)(request, metadata=tuple(metadata), timeout=timeout_s)
        response = await call
        return UnaryResult(
            response=response,
            header_metadata=list(await call.initial_metadata() or ()),
            trailer_metadata=list(await call.trailing_metadata() or ()),
        )

    def server_stream(
        self, binding: Binding, request: Message, metadata: Metadata, timeout_s: float
    ) -> Any:
        """Start a server-streaming call; iterate it with ``async for`` or ``read()``."""
        return self._callable(binding)(request, metadata=tuple(metadata), timeout=timeout_s)

    def _callable(self, binding: Binding) -> Any:
        path = binding.grpc_path
        multicallable = self._callables.get(path)
        if multicallable is None:
            factory = (
                self.channel.unary_stream if binding.server_streaming else self.channel.unary_unary
            )
            multicallable = factory(
                path,
                request_serializer=_serialize,
                response_deserializer=binding.response_class.FromString,
            )
            self._callables[path] = multicallable
        return multicallable

    async def close(self, grace_s: float | None = None) -> None:
        """Close the channel; calls still running after ``grace_s`` are cancelled."""
        if self._channel is not None:
            await self._channel.close(grace_s)
            self._channel = None
            self._callables.clear()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
