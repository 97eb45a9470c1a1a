"""Prometheus metrics every envios process shares: gRPC server metrics and ``/metrics``.

``ServerMetricsInterceptor`` counts the RPCs of a ``grpc.aio`` server by service, method,
type and status code, with a latency histogram and an in-flight gauge. The names follow
go-grpc-prometheus, so standard dashboards and alert rules apply.

``start_process_metrics`` serves ``/metrics`` for a process when its configuration has an
address: the default ``prometheus_client`` registry (with the process collector's CPU
and memory series) plus any separate registries the process keeps. Defining the metrics
here does no I/O.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as start_prometheus_server
from prometheus_client.metrics_core import Metric

from services.common.config import PREFIX, EnvReader
from services.common.interceptors import Context, grpc_type, wrap_handler

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Histogram buckets of RPC and HTTP latency, in seconds; tasks run for 1 to 5 s or more."""

BUILD_INFO = Gauge(
    "envios_build_info",
    "Always 1; the labels name the process: service, site, replica and package version",
    ["service", "site", "replica", "version"],
)


class ServerMetrics:
    """The gRPC server metrics of one registry (the default one in a service process)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["grpc_service", "grpc_method", "grpc_type"]
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code name (OK, NOT_FOUND...)",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC's handler to its completion",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.in_flight = Gauge(
            "envios_grpc_server_in_flight",
            "RPCs the server is handling now",
            ["grpc_service"],
            registry=registry,
        )


_default_server_metrics: ServerMetrics | None = None


def default_server_metrics() -> ServerMetrics:
    """Return the ``ServerMetrics`` of the default registry, created on first use."""
    global _default_server_metrics
    if _default_server_metrics is None:
        _default_server_metrics = ServerMetrics(REGISTRY)
    return _default_server_metrics


class _MeasuredCall:
    """Async context manager around one RPC handler that records its metrics."""

    def __init__(self, metrics: ServerMetrics, labels: tuple[str, str, str], context: Context):
        self.metrics = metrics
        self.labels = labels
        self.context = context
        self.began = 0.0

    async def __aenter__(self) -> None:
        self.began = time.perf_counter()
        self.metrics.started.labels(*self.labels).inc()
        self.metrics.in_flight.labels(self.labels[0]).inc()

    async def __aexit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        code = status_code_name(self.context, error)
        self.metrics.handled.labels(*self.labels, code).inc()
        self.metrics.handling_seconds.labels(*self.labels).observe(time.perf_counter() - self.began)
        self.metrics.in_flight.labels(self.labels[0]).dec()


def status_code_name(context: Context, error: BaseException | None) -> str:
    """Return the name of the status code an RPC handler ended with.

    An abort and ``context.set_code`` leave the code on the context. A cancellation
    is DEADLINE_EXCEEDED once the deadline has passed, else CANCELLED. Any other
    exception reaches grpc, which sends UNKNOWN.
    """
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if error is None or isinstance(error, grpc.aio.AbortError):
        return "OK"
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return "DEADLINE_EXCEEDED" if expired else "CANCELLED"
    return "UNKNOWN"


class ServerMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Record ``grpc_server_*`` metrics of every RPC whose handler is a coroutine or an
    async generator. List it first, so it also records the codes later interceptors send."""

    def __init__(self, metrics: ServerMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else default_server_metrics()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        labels = (service, method, grpc_type(handler))
        return wrap_handler(handler, lambda context: _MeasuredCall(self.metrics, labels, context))


class _RegistryUnion:
    """A collector that yields the metrics of several registries, for one endpoint."""

    def __init__(self, registries: Sequence[CollectorRegistry]) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self.registries:
            yield from registry.collect()


@dataclass(frozen=True)
class MetricsServer:
    """A running ``/metrics`` HTTP server."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(
    address: str, registries: Iterable[CollectorRegistry] = (REGISTRY,)
) -> MetricsServer:
    """Serve the union of ``registries`` at ``http://address/metrics`` from a daemon thread.

    ``address`` is ``host:port``; port 0 picks a free port (``MetricsServer.port``).

    Raises:
        OSError: the address cannot be bound.
    """
    host, _, port = address.rpartition(":")
    union = CollectorRegistry(auto_describe=False)
    union.register(_RegistryUnion(list(registries)))
    server, thread = start_prometheus_server(int(port), addr=host, registry=union)
    serving = MetricsServer(server, thread)
    logger.info("serving Prometheus metrics on %s:%s", host, serving.port)
    return serving


@dataclass(frozen=True)
class MetricsConfig:
    """The ``/metrics`` address of a process and the labels of its ``envios_build_info``."""

    address: str
    """``host:port`` of ``/metrics`` (``ENVIOS_METRICS_ADDRESS``); empty serves nothing."""
    service: str
    """Short name of the process kind: ``shipment``, ``gateway``, ``worker``..."""
    site: str
    """Site name (``ENVIOS_SITE``)."""
    replica: str
    """Process name (``ENVIOS_REPLICA``), for example ``shipment-primary-1``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], service: str) -> MetricsConfig:
        """Read the configuration; ``ENVIOS_METRICS_ADDRESS`` unset or empty means none.

        Raises:
            ConfigError: ``ENVIOS_METRICS_ADDRESS`` is not ``host:port``.
        """
        env = EnvReader(environ)
        name = PREFIX + "METRICS_ADDRESS"
        address = env.address(name) if environ.get(name) else ""
        config = cls(
            address=address,
            service=service,
            site=environ.get(PREFIX + "SITE", ""),
            replica=environ.get(PREFIX + "REPLICA", f"{service}-local"),
        )
        env.check()
        return config


METRICS_BIND_RETRY_S = 1.0
"""Seconds between attempts to bind a ``/metrics`` address that was taken."""


def start_process_metrics(
    config: MetricsConfig, extra_registries: Sequence[CollectorRegistry] = ()
) -> None:
    """Set ``envios_build_info`` and serve ``/metrics`` when ``config.address`` is set.

    The endpoint serves the default registry and then ``extra_registries``. When the
    address is taken (a restarted process whose port another socket holds for a moment),
    the error is logged and a daemon thread tries again every ``METRICS_BIND_RETRY_S``:
    the process serves its traffic without waiting for its metrics endpoint.
    """
    BUILD_INFO.labels(config.service, config.site, config.replica, package_version()).set(1)
    if not config.address:
        return
    registries = (REGISTRY, *extra_registries)
    try:
        serve_metrics(config.address, registries)
    except OSError as error:
        logger.error(
            "serving /metrics on %s failed: %s; retrying every %.0f s",
            config.address,
            error,
            METRICS_BIND_RETRY_S,
        )
        threading.Thread(
            target=_serve_when_free, args=(config.address, registries), daemon=True
        ).start()


def _serve_when_free(address: str, registries: Sequence[CollectorRegistry]) -> None:
    while True:
        time.sleep(METRICS_BIND_RETRY_S)
        try:
            serve_metrics(address, registries)
        except OSError:
            continue
        return


def package_version() -> str:
    """Return the installed version of the envios package, or ``unknown``."""
    try:
        return importlib.metadata.version("envios")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
