"""uvicorn's httptools protocol with a deadline for the request head and coalesced writes.

uvicorn bounds an idle keep-alive connection, but not a client that sends its request
line and headers a few bytes at a time: every byte cancels the keep-alive timer, and
nothing else runs until the head is complete. Such a client would keep a connection
open for as long as it trickles. This protocol closes the connection when the head of a
request is not complete ``header_timeout_s`` after the connection opened or the previous
response ended, like Go's ``http.Server.ReadHeaderTimeout``. The
request body has its own limit (``GatewayConfig.body_timeout_s``).

uvicorn writes a response head and its body with two ``transport.write`` calls, and
uvloop sends each one with its own system call. ``CoalescingTransport`` joins the writes
made in one event loop iteration into one send, so a small response leaves in one segment.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes a connection whose request head is too slow.

    ``header_timeout_s`` is a class attribute; ``with_header_timeout`` makes a subclass
    with another value, because uvicorn creates the protocol from a class.
    """

    header_timeout_s = 10.0

    @classmethod
    def with_header_timeout(cls, timeout_s: float) -> type[HeaderDeadlineProtocol]:
        """Return a subclass whose connections get ``timeout_s`` for each request head."""
        return type("HeaderDeadlineProtocol", (cls,), {"header_timeout_s": timeout_s})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # A pipelined request that starts now already has its whole head.
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm_header_deadline(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._header_deadline = None

    def _head_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        logger.info(
            "closing connection from %s: request head not complete after %.1f s",
            self.client,
            self.header_timeout_s,
        )
        self.transport.close()


class CoalescingTransport:
    """A transport wrapper that sends the writes of one event loop iteration together.

    ``write`` buffers its data and schedules one flush with ``call_soon``. ``close`` and
    ``write_eof`` flush first, and ``abort`` drops what is buffered. Every other attribute
    is the wrapped transport's.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)
