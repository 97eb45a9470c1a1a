"""Run the gateway under uvicorn with a graceful shutdown.

On SIGTERM or SIGINT:

1. ``/healthz`` turns 503 at once, and for ``drain_s`` seconds the gateway keeps
   serving, so the load balancer's health checks route new requests elsewhere;
2. the listener closes and in-flight requests get ``shutdown_grace_s`` seconds to finish,
   after which uvicorn cancels them;
3. lifespan shutdown closes the upstream channel.

A second signal skips what is left of the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Generator

import uvicorn

from gateway.app import GatewayApp
from gateway.config import GatewayConfig
from gateway.metrics import MetricsMiddleware
from gateway.protocol import HeaderDeadlineProtocol

logger = logging.getLogger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GatewayServer(uvicorn.Server):
    """uvicorn server whose signal handling drains the gateway before stopping."""

    def __init__(self, app: GatewayApp, config: GatewayConfig) -> None:
        super().__init__(
            uvicorn.Config(
                MetricsMiddleware(app),
                host=config.host,
                port=config.port,
                log_config=None,
                access_log=False,
                lifespan="on",
                # The client address is the TCP peer (Envoy behind the front listener), as
                # Go's RemoteAddr under grpc-gateway; metadata.py appends it to
                # X-Forwarded-For. uvicorn's proxy-header rewriting would put the original
                # caller there instead and list it twice.
                proxy_headers=False,
                # Go's net/http sends no Server header.
                server_header=False,
                http=HeaderDeadlineProtocol.with_header_timeout(config.header_timeout_s),
                timeout_graceful_shutdown=max(1, round(config.shutdown_grace_s)),
                timeout_keep_alive=max(1, round(config.keep_alive_s)),
                # Above this size h11 itself rejects the head with a plain-text 400; between
                # max_header_bytes and this size the application returns 431 with JSON.
                h11_max_incomplete_event_size=2 * config.max_header_bytes,
            )
        )
        self.gateway = app
        self.drain_s = config.drain_s
        self._drain_timer: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install the draining signal handlers for the life of ``serve``.

        Only the main thread can receive signals; a server run in another thread (as in
        tests) is stopped through ``request_shutdown`` or ``should_exit`` instead.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in SHUTDOWN_SIGNALS:
            loop.add_signal_handler(sig, self.request_shutdown, sig)
        try:
            yield
        finally:
            for sig in SHUTDOWN_SIGNALS:
                loop.remove_signal_handler(sig)

    def request_shutdown(self, sig: int = signal.SIGTERM) -> None:
        """Start draining; stop serving after ``drain_s`` (at once on a repeated request)."""
        if self.gateway.draining:
            logger.info("signal %s received again; stopping now", sig)
            self.should_exit = True
            return
        logger.info(
            "signal %s received; draining for %.1f s before closing the listener", sig, self.drain_s
        )
        self.gateway.start_draining()
        loop = asyncio.get_running_loop()
        self._drain_timer = loop.call_later(self.drain_s, self._stop_serving)

    def _stop_serving(self) -> None:
        logger.info(
            "closing the listener; %s requests in flight get up to %s s",
            self.gateway.in_flight,
            self.config.timeout_graceful_shutdown,
        )
        self.should_exit = True

    @property
    def port(self) -> int:
        """The bound port, once ``started`` is true."""
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the gateway server is not listening yet")


async def serve(config: GatewayConfig, app: GatewayApp | None = None) -> None:
    """Serve until a shutdown signal completes the graceful shutdown."""
    gateway = app or GatewayApp(config)
    server = GatewayServer(gateway, config)
    logger.info(
        "%s starting: %s routes, upstream %s, at most %s concurrent requests",
        config.replica,
        len(gateway.bindings),
        config.upstream_grpc,
        config.max_concurrent_requests,
    )
    gateway.log_routes()
    await server.serve()
    logger.info("%s stopped", config.replica)
