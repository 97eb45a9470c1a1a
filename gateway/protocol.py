"""uvicorn's httptools protocol with a deadline for the request head.

uvicorn bounds an idle keep-alive connection, but not a client that sends its request
line and headers a few bytes at a time: every byte cancels the keep-alive timer, and
nothing else runs until the head is complete. Such a client would keep a connection
open for as long as it trickles. This protocol closes the connection when the head of a
request is not complete ``header_timeout_s`` after the connection opened or the previous
response ended, like Go's ``http.Server.ReadHeaderTimeout``. The
request body has its own limit (``GatewayConfig.body_timeout_s``).
"""

from __future__ import annotations

import asyncio
import logging

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
        super().connection_made(transport)
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
