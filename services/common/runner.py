"""Entry point shared by the service mains: configuration, logging, serve until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from services.common.config import ConfigError, describe
from services.common.logs import configure_logging
from services.common.metrics import MetricsConfig, start_process_metrics
from services.common.server import GrpcServer, ServiceApp, serve_until_signal
from services.common.tracing import shutdown_tracing, start_tracing

logger = logging.getLogger(__name__)

C = TypeVar("C")
A = TypeVar("A", bound=ServiceApp)


def run_service(
    service: str,
    load_config: Callable[[Mapping[str, str]], C],
    make_app: Callable[[C], A],
    metrics_registries: Callable[[A], Sequence[CollectorRegistry]] = lambda app: (),
) -> None:
    """Read the configuration from the environment and serve until SIGTERM or SIGINT.

    ``/metrics`` serves the default registry plus ``metrics_registries(app)`` on
    ``ENVIOS_METRICS_ADDRESS`` when it is set. Exits with status 2 and one message listing
    every problem when the configuration is invalid.
    """
    try:
        config: Any = load_config(os.environ)
        metrics_config = MetricsConfig.from_env(os.environ, service)
    except ConfigError as error:
        print(f"{service}: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    configure_logging(config.server.log_level, service, config.server.replica)
    logger.info("starting %s with %s", service, describe(config))
    start_tracing(service, config.server.replica, config.server.site)

    async def serve() -> None:
        # grpc.aio binds the server to the running loop, so build it inside that loop.
        app = make_app(config)
        start_process_metrics(metrics_config, metrics_registries(app))
        await serve_until_signal(GrpcServer(config.server, app))

    try:
        asyncio.run(serve())
    finally:
        shutdown_tracing()
