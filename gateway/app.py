"""The gateway's ASGI application: HTTP/JSON in, gRPC to the services, HTTP/JSON out.

Routes come only from the ``google.api.http`` annotations of the descriptors (see
``gateway.bindings``); ``gateway.exchange`` serves each request. Responses the gateway
sends before routing, each with a ``google.rpc.Status`` JSON body:

- a request head (request line and headers) over ``max_header_bytes``: 431 with
  RESOURCE_EXHAUSTED, the status Go's net/http and Envoy send for it;
- more than ``max_concurrent_requests`` requests in flight: 429 RESOURCE_EXHAUSTED at once.

``GET /healthz`` returns 200 ``{"status": "SERVING"}``, or 503 ``{"status": "NOT_SERVING"}``
once ``start_draining`` was called. ``GET /openapi.json`` returns the OpenAPI document of
the routes. Neither counts against the concurrency limit. ``GET /track`` and ``/`` serve the
shipment tracking page (see ``gateway.page``), which does count against it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from google.rpc import code_pb2

from gateway.bindings import Binding, load_bindings, load_source_bindings
from gateway.config import GatewayConfig
from gateway.descriptors import read_descriptor_set
from gateway.errors import GatewayError, status_json
from gateway.exchange import Exchange, encode
from gateway.marshal import CONTENT_TYPE, dumps
from gateway.openapi import openapi_document
from gateway.page import TrackingPage
from gateway.routes import Route, RouteOrder, Router
from gateway.upstream import Upstream

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[str, str]]

HEALTH_PATH = "/healthz"
OPENAPI_PATH = "/openapi.json"


def configured_bindings(config: GatewayConfig) -> list[Binding]:
    """Return the bindings ``config`` selects: its descriptor set file, or the envios protos.

    Raises:
        DescriptorSetError: the descriptor set cannot be read or lacks a named service.
        BindingError: an rpc's rule cannot be served; the message names the rpc and template.
    """
    if not config.descriptor_set:
        return load_bindings()
    source = read_descriptor_set(Path(config.descriptor_set))
    return load_source_bindings(source, config.services)


class GatewayApp:
    """ASGI application serving every binding over one upstream channel."""

    def __init__(
        self,
        config: GatewayConfig,
        bindings: Sequence[Binding] | None = None,
        upstream: Upstream | None = None,
    ) -> None:
        self.config = config
        self.bindings = list(configured_bindings(config) if bindings is None else bindings)
        self.router: Router[Binding] = Router(
            (Route(b.http_method, b.template, b) for b in self.bindings),
            RouteOrder(config.route_order),
        )
        self.upstream = upstream or Upstream(config.upstream_grpc)
        self.draining = False
        self.in_flight = 0
        self._openapi: bytes | None = None
        self.page = TrackingPage()

    def log_routes(self) -> None:
        """Log the route table, one line per binding, in the order routes are tried."""
        logger.info(
            "%s routes, tried in %s order:", len(self.router.routes), self.router.order.value
        )
        for route in self.router.routes:
            logger.info("route %s", route.target.describe)

    @property
    def openapi(self) -> bytes:
        """The OpenAPI document of the bindings, built on first use."""
        if self._openapi is None:
            self._openapi = dumps(openapi_document(self.bindings))
        return self._openapi

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
        if scope["method"] in ("GET", "HEAD"):
            if scope["path"] == HEALTH_PATH:
                await self._health(send)
                return
            if scope["path"] == OPENAPI_PATH:
                await _send_body(send, 200, self.openapi)
                return
        error = self._admission_error(scope)
        if error is not None:
            await _send_body(send, error.status_code, dumps(status_json(error.to_status())))
            return
        self.in_flight += 1
        try:
            # The tracking page counts against the limit like the API it calls.
            if self.page.handles(scope):
                await self.page.serve(scope, send)
            else:
                await Exchange(self, scope, receive, send).run()
        finally:
            self.in_flight -= 1

    def _admission_error(self, scope: Scope) -> GatewayError | None:
        head_size = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
        head_size += sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
        if head_size > self.config.max_header_bytes:
            return GatewayError(
                code_pb2.RESOURCE_EXHAUSTED,
                f"request headers are larger than the limit of {self.config.max_header_bytes} "
                "bytes",
                http_status=431,
            )
        if self.in_flight >= self.config.max_concurrent_requests:
            limit = self.config.max_concurrent_requests
            return GatewayError(
                code_pb2.RESOURCE_EXHAUSTED,
                f"too many concurrent requests: this gateway handles at most {limit} at once",
            )
        return None

    async def _health(self, send: Send) -> None:
        status, text = (503, "NOT_SERVING") if self.draining else (200, "SERVING")
        await _send_body(send, status, dumps({"status": text}))


async def _send_body(send: Send, status: int, body: bytes) -> None:
    headers = [("content-type", CONTENT_TYPE), ("content-length", str(len(body)))]
    await send({"type": "http.response.start", "status": status, "headers": encode(headers)})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def create_app(config: GatewayConfig, bindings: Sequence[Binding] | None = None) -> GatewayApp:
    """Return the gateway ASGI application for ``config``.

    ``bindings`` defaults to ``configured_bindings(config)``. The upstream
    channel opens on ASGI lifespan startup or on the first request; ``close()`` (or
    lifespan shutdown) closes it.
    """
    return GatewayApp(config, bindings)
